"""Processes as a user runs them: a real process on a free 127.0.0.1 port, up when its /healthz
answers, stopped by its PID. The tests' :func:`running` proxy and the benchmark's servers
(bench/servers.py) are both started, waited for and stopped here."""

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


def spawn(argv: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, stdout: bool = False) -> subprocess.Popen[bytes]:
    """A process in a session of its own (a signal to its group reaches the workers of a
    --workers N proxy too), its stderr (and stdout, if asked) in ``log``."""
    with log.open("wb") as sink:
        return subprocess.Popen(list(argv), cwd=cwd or ROOT, env=env, stderr=sink,
                                stdout=sink if stdout else subprocess.DEVNULL,
                                start_new_session=True)


def wait_healthy(process: subprocess.Popen[bytes], base: str, log: Path,
                 seconds: float = START_TIMEOUT) -> None:
    """Until ``base``/healthz answers 200; an AssertionError with the log's end if the
    process exits or does not answer in time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{log.stem} exited with {process.returncode}:\n"
                                 + log.read_text("utf-8", "replace")[-4000:])
        try:
            if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # polling another process's port: there is no event to wait on
    raise AssertionError(f"{log.stem} did not answer /healthz in {seconds:g} s:\n"
                         + log.read_text("utf-8", "replace")[-4000:])


def stop_group(process: subprocess.Popen[bytes], grace: float = 30) -> int:
    """SIGTERM to the process's group, SIGKILL to it after ``grace`` seconds; the exit code."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return process.returncode


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
    server = Server(spawn(argv, stderr, env=environment, cwd=cwd), f"http://127.0.0.1:{port}",
                    stderr)
    try:
        wait_healthy(server.process, server.base, stderr)
        yield server
    finally:
        server.stop()
        if server.process.returncode is not None:  # workers a killed supervisor left behind
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
