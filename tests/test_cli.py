"""``python -m proxy`` as an operator starts it: every setting a flag and a variable, and a bad
one stops the start with a message that names it (and never repeats a secret)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest

from proxy.settings import OPTIONS
from tests.processes import ROOT, free_port, running


def start(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SMSLEADS_")}
    return subprocess.run([sys.executable, "-m", "proxy", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "env", "named"), [
    (["--port", "70000"], {}, "--port"),
    ([], {"SMSLEADS_UPSTREAM_TIMEOUT": "soon"}, "SMSLEADS_UPSTREAM_TIMEOUT"),
    (["--workers", "0"], {}, "--workers"),
    ([], {"SMSLEADS_API_URL": "ftp://example.invalid"}, "SMSLEADS_API_URL"),
    ([], {"SMSLEADS_READINESS_WINDOW": "-1"}, "SMSLEADS_READINESS_WINDOW"),
    (["--token-file", "/no/such/secret"], {}, "--token-file"),
    (["--max-connections", str(2**31)], {}, "--max-connections"),  # over any open-file limit
    ([], {"SMSLEADS_USERNAME": "acme", "SMSLEADS_TOKEN": "provider-secret-1"},
     "SMSLEADS_PROXY_API_KEYS"),
    ([], {"SMSLEADS_USERNAME": "acme", "SMSLEADS_TOKEN": "provider-secret-1",
          "SMSLEADS_PROXY_API_KEYS": "tiny-key"}, "SMSLEADS_PROXY_API_KEYS"),
])
def test_an_invalid_setting_stops_the_start_naming_it(args, env, named):
    done = start([*args, "--port", str(free_port())] if "--port" not in args else args, env)
    assert done.returncode != 0
    assert named in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert "provider-secret-1" not in done.stderr and "tiny-key" not in done.stderr


def test_help_names_every_flag_and_variable():
    done = start(["--help"], {})
    assert done.returncode == 0
    for option in OPTIONS:
        assert option.flag in done.stdout and option.env in done.stdout


def test_settings_from_the_environment_and_flags_win(tmp_path):
    env = {"SMSLEADS_SANDBOX": "true", "SMSLEADS_MAX_BODY_BYTES": "50",
           "SMSLEADS_REQUESTS_PER_SECOND": "7"}
    # `none` turns a default limit off, through the environment the workers read theirs from.
    args = ["--max-body-bytes", "100", "--requests-per-second", "none"]
    with running(tmp_path, args, env=env) as server:
        small = httpx.post(server.base + "/v1/messages", auth=("demo", "demo-token"),
                           json={"text": "x" * 70})
        large = httpx.post(server.base + "/v1/messages", auth=("demo", "demo-token"),
                           json={"text": "x" * 120})
        limits = httpx.get(server.base + "/v1/limits", auth=("demo", "demo-token")).json()
    assert small.status_code == 422  # read (flag: 100 bytes), then refused by the schema
    assert large.status_code == 413
    assert [policy["name"] for policy in limits["policies"]] == ["recipients"]
