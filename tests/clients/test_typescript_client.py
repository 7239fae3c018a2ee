"""The scenario through the typescript-fetch client: compiled with tsc, run on Node 20.

typescript and @types/node come from tests/clients/package-lock.json, installed by
``npm ci`` into .cache/npm once per lock; the client is generated into .cache/clients.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.clients.conftest import BUDGET
from tests.clients.support import HERE, generate, npm_install, require_node

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
    node, _ = require_node()
    script = compile_scenario(tmp_path)
    run = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PROXY_URL": validated.base,
                              "DIRECT_URL": proxy.base, "DAILY_CREDITS": str(BUDGET)})
    assert run.returncode == 0, f"the scenario failed:\n{run.stdout}{run.stderr}"
    assert run.stdout.splitlines() == [f"ok {step}" for step in STEPS] + ["scenario passed"]
