"""Prism (Stoplight) as a validating proxy in front of the proxy: every request a client
scenario makes, and every answer it gets, is checked against openapi.yaml.

    prism proxy openapi.yaml <proxy> --errors

With ``--errors`` a request that breaks the spec is answered by Prism itself (422, never
forwarded) and an answer that breaks it becomes a 500: a violation fails the scenario that
met it. Prism logs one "Request received" line per request and a line per violation; this
module reads them from its log file.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.processes import free_port

START_TIMEOUT = 120.0  # Prism compiles every schema of the document before it listens
READY = "Prism is listening on"
RECEIVED = "Request received"
ANSWERED = re.compile(r"Received forward response|Request terminated with error")
VIOLATION = re.compile(r"[Vv]iolation|Request terminated with error")


@dataclass
class Prism:
    process: subprocess.Popen[bytes]
    base: str
    log: Path
    _read: int = field(default=0)  # log lines already taken by `since_last`

    def lines(self) -> list[str]:
        return self.log.read_text("utf-8", errors="replace").split("\n")[:-1]

    def settled(self, probe: httpx.Client) -> list[str]:
        """The log once every earlier request has its lines: one more request (a balance
        read) goes through last, and the log is read once that one is answered in it. Prism
        writes its lines in order, so all the earlier ones are there too."""
        before = sum(RECEIVED in line for line in self.lines())
        probe.get(self.base + "/v1/balance").raise_for_status()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lines = self.lines()
            marks = [line for line in lines if RECEIVED in line or ANSWERED.search(line)]
            if sum(RECEIVED in line for line in marks) > before and ANSWERED.search(marks[-1]):
                return lines
            time.sleep(0.05)  # another process's log file: there is no event to wait on
        raise AssertionError("Prism did not log the answer to its last request:\n"
                             + "\n".join(self.lines()[-40:]))

    def since_last(self, probe: httpx.Client) -> tuple[int, list[str]]:
        """(requests Prism validated, violation lines) since the previous call."""
        lines = self.settled(probe)
        new, self._read = lines[self._read:], len(lines)
        return (sum(RECEIVED in line for line in new),
                [line for line in new if VIOLATION.search(line)])


@contextmanager
def running_prism(prism: Path, spec: Path, upstream: str, workdir: Path) -> Iterator[Prism]:
    port = free_port()
    log = workdir / f"prism-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(prism), "proxy", str(spec), upstream, "--errors", "--host", "127.0.0.1",
             "--port", str(port)], stdout=sink, stderr=subprocess.STDOUT)
    server = Prism(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not any(READY in line for line in server.lines()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("Prism did not start:\n" + log.read_text("utf-8"))
            time.sleep(0.1)  # its own word, in a file: polled
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
