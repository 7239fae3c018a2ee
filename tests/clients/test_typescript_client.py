"""The scenario through the typescript-fetch client: compiled with tsc, run on Node 20.

typescript and @types/node come from tests/clients/package-lock.json, installed by
``npm ci`` into .cache/npm once per lock; the client is generated into .cache/clients.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.clients.support import HERE, generate, npm_install, run_node_scenario

STEPS = ["balance", "send to two numbers", "contact list", "delivery reports", "pages",
         "incoming messages", "scheduled send cancelled", "subscribers", "blacklist",
         "phone verification", "errors"]


def compile_scenario(build: Path) -> Path:
    """scenario.ts and the generated client, compiled by tsc --strict into build/out."""
    modules = npm_install(HERE)
    shutil.copytree(generate("typescript-fetch").path, build / "client")
    shutil.copy(HERE / "scenario.ts", build / "scenario.ts")
    (build / "node_modules").symlink_to(modules, target_is_directory=True)
    tsc = [str(modules / ".bin" / "tsc"), "--strict", "--target", "es2022", "--module", "nodenext",
           "--types", "node", "--outDir", "out", "scenario.ts"]
    compiled = subprocess.run(tsc, cwd=build, capture_output=True, text=True, timeout=300)
    assert compiled.returncode == 0, f"tsc failed:\n{compiled.stdout}{compiled.stderr}"
    return build / "out" / "scenario.js"


def test_scenario_through_the_typescript_fetch_client(proxy, validated, tmp_path):
    lines = run_node_scenario(compile_scenario(tmp_path), proxy.base, validated.base)
    assert lines == [f"ok {step}" for step in STEPS] + ["scenario passed"]
