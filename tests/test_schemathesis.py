"""schemathesis 4, every phase and every check, against python -m proxy --sandbox over HTTP.

Examples, coverage, fuzzing and the stateful phase (which follows the spec's links: a new
list's id to read, fill, empty and delete it; a send's campaign_id to cancel it). What a check
is told to expect beyond its defaults is in tests/schemathesis.toml, each with its reason.
The seeds are fixed, so a failure reproduces; the number of cases is printed in the summary.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from proxy.docs import load_spec
from proxy.mapping import load_table
from tests.clients.support import BIN
from tests.conftest import FIGURES
from tests.processes import ROOT, running

CONFIG = Path(__file__).with_name("schemathesis.toml")
PHASES = ("Examples", "Coverage", "Fuzzing", "Stateful")
SEED = "20261125"
MAX_EXAMPLES = "100"  # per operation and phase: about 40 s on two cores
# An account rich enough that sends succeed all run long and the links behind them (cancel a
# campaign) are followed, instead of every send after the first few answering 402.
ACCOUNT = {"username": "fuzzer", "token": "fuzzer-token", "credits": 10**9}


def test_schemathesis_finds_no_failure(tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([ACCOUNT]))
    # Its own proxy and sandbox, apart from the client scenarios' (proxy/sandbox/__main__.py
    # reads SANDBOX_ACCOUNTS and SANDBOX_SEED in the embedded sandbox too).
    env = {"SANDBOX_ACCOUNTS": str(accounts), "SANDBOX_SEED": "1", "SANDBOX_DLR_DELAY": "0"}
    with running(tmp_path, ["--sandbox"], env=env) as proxy:
        run = subprocess.run(
            [str(BIN / "schemathesis"), "--config-file", str(CONFIG), "run",
             f"{proxy.base}/openapi.json", "--auth", f"{ACCOUNT['username']}:{ACCOUNT['token']}",
             "--checks", "all",
             "--phases", ",".join(p.lower() for p in PHASES), "--max-examples", MAX_EXAMPLES,
             "--seed", SEED, "--no-color", "--output-truncate", "true"],
            capture_output=True, text=True, timeout=600, cwd=ROOT)
    output = run.stdout + run.stderr
    cases = re.search(r"^\s*(\d+) generated, .*$", output, re.M)
    tested = re.search(r"^\s*Tested: (\d+)$", output, re.M)
    links = re.search(r"API Links: +(.*)$", output, re.M)
    FIGURES.append(f"schemathesis: {cases.group(0).strip() if cases else 'no count'}; "
                   f"links {links.group(1) if links else '?'} "
                   f"(seed {SEED}, {MAX_EXAMPLES} examples per operation and phase)")
    assert run.returncode == 0, output[-30000:]
    # Every operation of the spec: the table's, and the proxy's own (GET /v1/limits).
    operations = [op for item in load_spec()["paths"].values() for op in item.values()
                  if isinstance(op, dict) and "operationId" in op]
    assert len(operations) == len(load_table().operations) + 1
    assert tested and int(tested.group(1)) == len(operations), output[-3000:]
    for phase in PHASES:
        assert f"✅ {phase}" in output, f"the {phase} phase did not pass:\n{output[-3000:]}"
    assert cases and int(cases.group(1)) > 1000, output[-3000:]
