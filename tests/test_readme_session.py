"""The README's "A first session", run as written against `smsleads-proxy --sandbox`.

Every curl command of that block runs against a real proxy process on loopback; each answer is
compared with the comment under the command: the status where one is given, and the JSON where
the comment is complete JSON (ids and times that change from run to run are written with …).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def first_session(title: str = "A first session") -> list[tuple[list[str], list[str]]]:
    """(curl argv, comment lines) for each command of the first sh block of a README section."""
    block = re.search(rf"## {title}\n.*?```sh\n(.*?)```", README.read_text(), re.S)
    assert block, f"README has no '{title}' block"
    commands: list[tuple[list[str], list[str]]] = []
    pending = ""
    for line in block.group(1).splitlines():
        if line.startswith("# ("):
            continue  # a note for the reader, not an answer
        if line.startswith("#"):
            if commands and not pending:
                commands[-1][1].append(line[1:].strip())
            continue
        if line.endswith("\\"):
            pending += line[:-1]
            continue  # shell line continuation
        pending += line + "\n"
        try:
            argv = shlex.split(pending)
        except ValueError:
            continue  # a quote still open: the command goes on
        if argv:
            commands.append((argv, []))
        pending = ""
    return commands


# New every run, or depending on what ran before.
VOLATILE = {"campaign_id", "reported_at", "available_credits"}


def _steady(value):
    if isinstance(value, dict):
        return {k: "…" if k in VOLATILE else _steady(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_steady(v) for v in value]
    return value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def proxy_url(tmp_path_factory):
    port = _free_port()
    log = (tmp_path_factory.mktemp("proxy") / "proxy.log").open("w+b")
    env = {**os.environ, "SANDBOX_DLR_DELAY": "0", "SANDBOX_FAILURE_RATE": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--sandbox", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            log.seek(0)
            pytest.fail("the proxy did not start: " + log.read().decode())
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.mark.parametrize(("title", "least"), [("A first session", 4),
                                             ("Price before you send", 1)])
def test_the_readme_sessions_work_as_written(proxy_url, title, least):
    curl = shutil.which("curl")
    assert curl, "curl is needed to run the README's commands"
    commands = first_session(title)
    assert len(commands) >= least
    for argv, comments in commands:
        assert argv[0] == "curl"
        argv = [curl, "-s", "-w", "\n%{http_code}"] + [
            arg.replace("http://127.0.0.1:8080", proxy_url) for arg in argv[1:]]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
        body, _, status = done.stdout.rpartition("\n")
        expected = " ".join(comments)
        shown = re.match(r"(\d{3}) ?(.*)", expected)
        if shown:
            assert status == shown.group(1), (argv, body)
            expected = shown.group(2)
        else:
            assert status == "200", (argv, body)
        if "…" not in expected and expected.startswith("{"):
            assert _steady(json.loads(body)) == _steady(json.loads(expected)), argv
        elif expected.startswith("{"):
            prefix = expected.split("…")[0]
            keys = re.findall(r'"(\w+)":', prefix)
            assert all(f'"{key}":' in body for key in keys), (argv, body)
