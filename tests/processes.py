"""The proxy as a user runs it: a real process on a free 127.0.0.1 port, stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    base: str
    stderr: Path

    def log_lines(self) -> list[dict]:
        """Every JSON line the server wrote to stderr so far."""
        complete = self.stderr.read_text("utf-8").split("\n")[:-1]  # not a line being written
        return [json.loads(line) for line in complete if line.startswith("{")]

    def kill(self) -> int:
        """SIGKILL to the whole process group (the supervisor and every worker), as a crash
        or an OOM killer would; the exit code."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return self.process.returncode

    def stop(self) -> int:
        """SIGTERM by PID, as an orchestrator stops a container; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def _wait_until_up(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"the proxy exited with {server.process.returncode}:\n"
                                 + server.stderr.read_text("utf-8")[-4000:])
        try:
            if httpx.get(server.base + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling another process's port: there is no event to wait on
    raise AssertionError("the proxy did not answer /healthz in time:\n"
                         + server.stderr.read_text("utf-8")[-4000:])


@contextmanager
def running(tmp_path: Path, args: Sequence[str] = (), *, env: Mapping[str, str] | None = None,
            command: Sequence[str] | None = None, cwd: Path | None = None,
            port: int | None = None) -> Iterator[Server]:
    """``python -m proxy ARGS`` (or ``command``) listening on 127.0.0.1:<free port>."""
    port = port or free_port()
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("SMSLEADS_", "PROMETHEUS_"))}
    environment.update({"SMSLEADS_PROXY_HOST": "127.0.0.1", "SMSLEADS_PROXY_PORT": str(port)})
    environment.update(env or {})
    stderr = tmp_path / f"proxy-{port}.log"
    argv = list(command or [sys.executable, "-m", "proxy"]) + list(args)
    with stderr.open("wb") as sink:
        # A session of its own: kill() reaches the workers of a --workers N proxy too.
        process = subprocess.Popen(argv, cwd=cwd or ROOT, env=environment,
                                   stdout=subprocess.DEVNULL, stderr=sink,
                                   start_new_session=True)
    server = Server(process, f"http://127.0.0.1:{port}", stderr)
    try:
        _wait_until_up(server)
        yield server
    finally:
        server.stop()
        if server.process.returncode is not None:  # workers a killed supervisor left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
