"""The scenario through openapi-fetch, typed by openapi-typescript: the types are generated
from openapi.yaml, the scenario compiled by tsc --strict with no casts, run on Node 20.

openapi-typescript, openapi-fetch, typescript 5 and @types/node come from
tests/clients/openapi-fetch/package-lock.json (installed by ``npm ci`` into .cache/npm once
per lock); generating the types takes a fraction of a second, so they are made afresh.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.clients.support import HERE, SPEC, npm_install, run_node_scenario

SCENARIO = HERE / "openapi-fetch" / "scenario.ts"
STEPS = ["balance", "preview", "send to two numbers", "contact list", "delivery reports",
         "pages", "errors"]
# A type assertion, `x as T` or `<T>x`: the scenario must type-check as it stands.
CAST = re.compile(r"\bas\s+(?!const\b)[A-Za-z_{[(]|<[A-Z][A-Za-z]*>\s*[A-Za-z_(]")


def compile_scenario(build: Path) -> Path:
    """The types from openapi.yaml and scenario.ts, compiled by tsc --strict into build/out."""
    modules = npm_install(HERE / "openapi-fetch")
    generated = subprocess.run([str(modules / ".bin" / "openapi-typescript"), str(SPEC),
                                "--output", str(build / "api.ts")],
                               capture_output=True, text=True, timeout=120)
    assert generated.returncode == 0, generated.stderr
    shutil.copy(SCENARIO, build / "scenario.ts")
    (build / "package.json").write_text('{"type": "module"}\n')
    (build / "node_modules").symlink_to(modules, target_is_directory=True)
    tsc = [str(modules / ".bin" / "tsc"), "--strict", "--noEmitOnError", "--target", "es2022",
           "--module", "nodenext", "--types", "node", "--outDir", "out", "scenario.ts"]
    compiled = subprocess.run(tsc, cwd=build, capture_output=True, text=True, timeout=300)
    assert compiled.returncode == 0, f"tsc failed:\n{compiled.stdout}{compiled.stderr}"
    (build / "out" / "package.json").write_text('{"type": "module"}\n')
    return build / "out" / "scenario.js"


def test_the_scenario_casts_nothing():
    assert CAST.findall(SCENARIO.read_text()) == []
    assert CAST.search("const x = y as Problem;") and CAST.search("<Problem>y")


def test_scenario_through_openapi_fetch(proxy, validated, tmp_path):
    lines = run_node_scenario(compile_scenario(tmp_path), proxy.base, validated.base)
    assert lines == [f"ok {step}" for step in STEPS] + ["scenario passed"]
