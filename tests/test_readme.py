"""The README's reference tables say what the code does."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from proxy.errors import ProblemError
from proxy.mapping import load_table
from proxy.settings import OPTIONS, Settings, shown

README = Path(__file__).resolve().parents[1] / "README.md"


def _block(name: str) -> str:
    text = README.read_text()
    found = re.search(rf"<!-- {name}:begin -->\n(.*?)<!-- {name}:end -->", text, re.S)
    assert found, f"README has no {name} block"
    return found.group(1)


def statuses_table() -> str:
    statuses = load_table().statuses
    rows = ["| upstream | HTTP | type | effect of a change |", "| --- | --- | --- | --- |"]
    said = {f"0, with an error saying the {name} does not exist": refusal
            for name, refusal in statuses.not_found.items()}
    for code, refusal in [*sorted(statuses.codes.items()), *said.items(),
                          ("any other", statuses.unknown)]:
        rows.append(f"| {code} | {refusal.http} | `{refusal.slug}` ({refusal.title}) | "
                    f"{refusal.effect.value} |")
    return "\n".join(rows) + "\n"


def settings_table() -> str:
    defaults = Settings()
    rows = ["| flag | environment | default | meaning |", "| --- | --- | --- | --- |"]
    for option in OPTIONS:
        default = shown(getattr(defaults, option.field))
        rows.append(f"| `{option.flag}` | `{option.env}` | `{default}` | {option.help} |")
    return "\n".join(rows) + "\n"


def test_readme_lists_every_upstream_status_as_the_table_maps_it():
    assert _block("statuses") == statuses_table()


def test_readme_lists_every_setting():
    assert {o.field for o in OPTIONS} == {f.name for f in fields(Settings)}
    assert _block("settings") == settings_table()


def test_readme_lists_every_problem_type_the_proxy_raises():
    errors = _section("Errors")
    for cls in _subclasses(ProblemError):
        if "slug" in vars(cls) and cls.slug not in ("internal-error", "upstream-error"):
            assert f"| {cls.status} | `{cls.slug}` |" in errors, cls.__name__


def _subclasses(cls: type) -> list[type]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


def _section(title: str) -> str:
    found = re.search(rf"^## {title}\n(.*?)^## ", README.read_text(), re.S | re.M)
    assert found, f"README has no {title} section"
    return found.group(1)


def test_readme_lists_every_operation():
    text = README.read_text()
    for op in load_table().operations:
        assert f"`{op.method} {op.path}" in text, op.operation_id


if __name__ == "__main__":  # refresh the tables: python -m tests.test_readme
    text = README.read_text()
    for name, table in (("statuses", statuses_table()), ("settings", settings_table())):
        text = re.sub(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)",
                      lambda m, t=table: m.group(1) + t + m.group(2), text, flags=re.S)
    README.write_text(text)
