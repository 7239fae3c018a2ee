"""openapi.yaml as the linters users reach for read it: Spectral's OpenAPI ruleset and
Redocly's recommended rules, both from tests/tools/package-lock.json (installed into
.cache/npm once per lock), find nothing. Each is also shown a faulty document, so a linter
that read nothing, or no rules, cannot pass for a clean one."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.clients.support import SPEC, npm_install
from tests.conftest import FIGURES

TOOLS = Path(__file__).resolve().parent / "tools"
# Redocly asks the network for news and sends usage data unless told not to.
QUIET = {**os.environ, "REDOCLY_TELEMETRY": "off", "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true"}

# An operation without operationId, description, tags or responses of substance, in a
# document without servers or info.contact: every ruleset has something to say about it.
FAULTY = """\
openapi: 3.1.0
info: {title: faulty, version: '1'}
paths:
  /things:
    get:
      responses:
        '200': {description: ok}
"""


@pytest.fixture(scope="module")
def bin_dir() -> Path:
    return npm_install(TOOLS) / ".bin"


def spectral(bin_dir: Path, spec: Path, out: Path) -> list[dict[str, Any]]:
    """Spectral's findings (its JSON report), every severity included."""
    report = out / "spectral.json"
    done = subprocess.run([str(bin_dir / "spectral"), "lint", str(spec), "--ruleset",
                           str(TOOLS / "spectral.yaml"), "--format", "json", "--output",
                           str(report), "--fail-severity", "hint"],
                          capture_output=True, text=True, timeout=300)
    assert report.exists(), f"spectral wrote no report ({done.returncode}):\n{done.stderr}"
    findings: list[dict[str, Any]] = json.loads(report.read_text() or "[]")
    assert (done.returncode == 0) == (findings == []), done.stderr
    return findings


def redocly(bin_dir: Path, spec: Path) -> list[dict[str, Any]]:
    """Redocly's problems under its recommended rules, warnings included."""
    done = subprocess.run([str(bin_dir / "redocly"), "lint", str(spec), "--extends",
                           "recommended", "--format", "json"],
                          capture_output=True, text=True, timeout=300, env=QUIET)
    report = json.loads(done.stdout)
    problems: list[dict[str, Any]] = report["problems"]
    assert report["totals"]["errors"] + report["totals"]["warnings"] == len(problems)
    return problems


def _lines(findings: list[dict[str, Any]], rule: str, message: str) -> str:
    return "\n".join(f"{f.get(rule)}: {f.get(message)}" for f in findings)


def test_spectral_oas_ruleset_finds_nothing(bin_dir, tmp_path):
    findings = spectral(bin_dir, SPEC, tmp_path)
    FIGURES.append(f"spectral (spectral:oas) on openapi.yaml: {len(findings)} findings")
    assert findings == [], _lines(findings, "code", "message")


def test_redocly_recommended_finds_nothing(bin_dir):
    problems = redocly(bin_dir, SPEC)
    FIGURES.append(f"redocly (recommended) on openapi.yaml: {len(problems)} findings")
    assert problems == [], _lines(problems, "ruleId", "message")


def test_both_linters_speak_up_on_a_faulty_document(bin_dir, tmp_path):
    faulty = tmp_path / "faulty.yaml"
    faulty.write_text(FAULTY)
    assert {"info-contact", "operation-operationId"} <= {
        f["code"] for f in spectral(bin_dir, faulty, tmp_path)}
    assert "operation-operationId" in {p["ruleId"] for p in redocly(bin_dir, faulty)}
