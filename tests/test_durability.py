"""A retried send is never sent twice, whatever happens to the proxy or its store: real proxy
processes killed with SIGKILL mid-call, restarted, on the SQLite default (one and two workers)
and on a real redis-server that is itself restarted or paused.

The upstream is tests/faulty_upstream.py, which carries out every command it reads and counts
the sends by text, even those it then never answers ("hang")."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import BASIC, FaultyUpstream, redis_process
from tests.processes import Server, free_port, running

TEXT = "durable-{}"
TIMEOUTS = {"SMSLEADS_UPSTREAM_TIMEOUT": "3", "SMSLEADS_UPSTREAM_CONNECT_TIMEOUT": "1",
            "SMSLEADS_BREAKER_FAILURES": "100"}
BOUND = 60.0  # seconds any wait here may take before the test fails


def _send(base: str, key: str, text: str, timeout: float = 30.0) -> httpx.Response:
    return httpx.post(base + "/v1/messages", timeout=timeout, json={
        "sender": "DemoAPI", "recipients": [{"phone": "0501234567"}], "text": text},
        headers={"Authorization": BASIC, "Idempotency-Key": key})


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {BOUND} s: {what}")
        time.sleep(0.05)  # another process's state: there is no event to wait on


def _in_flight(base: str, key: str, text: str) -> threading.Thread:
    """A keyed send whose client waits on an answer that never comes."""
    def send() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the proxy died under it
            _send(base, key, text)
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _settled(base: str, key: str, text: str) -> httpx.Response:
    """Retry the key as a client would (after Retry-After) until its answer is final."""
    deadline = time.monotonic() + BOUND
    while True:
        answer = _send(base, key, text)
        if answer.status_code != 409 or answer.json()["type"] != "/problems/idempotency-key-in-use":
            return answer
        if time.monotonic() > deadline:
            pytest.fail("the key stayed in use")
        time.sleep(min(float(answer.headers["retry-after"]), 1.0))


def _sent(faulty: FaultyUpstream, text: str) -> int:
    return int(faulty.stats()["sends"].get(text, 0))


@contextmanager
def _proxy(tmp_path: Path, env: dict[str, str], *args: str, port: int | None = None
           ) -> Iterator[Server]:
    with running(tmp_path, args, env={**TIMEOUTS, **env}, port=port) as server:
        yield server


@pytest.mark.parametrize("workers", [1, 2])
def test_a_send_in_flight_when_the_proxy_dies_is_never_sent_again(tmp_path, faulty, workers):
    faulty.plan("hang")  # carried out, never answered
    text, key = TEXT.format(f"sqlite-{workers}"), f"k-sqlite-{workers}"
    env = {"SMSLEADS_API_URL": faulty.url, "SMSLEADS_STATE_DIR": str(tmp_path / "state")}
    args = ("--workers", str(workers))
    with _proxy(tmp_path, env, *args) as proxy:
        _in_flight(proxy.base, key, text)
        _until(lambda: _sent(faulty, text) == 1, "the send reached the upstream")
        assert proxy.kill() == -signal.SIGKILL
    faulty.plan()  # the upstream answers now (its counts start again): a resend would go out
    with _proxy(tmp_path, env, *args) as proxy:
        answers = [_settled(proxy.base, key, text) for _ in range(3)]  # any worker
    for answer in answers:
        assert answer.status_code == 409
        assert answer.json()["type"] == "/problems/outcome-unknown"
    assert _sent(faulty, text) == 0  # nothing sent again


def test_an_answer_kept_before_the_proxy_died_is_replayed_after_it_restarts(tmp_path, faulty):
    text, key = TEXT.format("replay"), "k-replay"
    env = {"SMSLEADS_API_URL": faulty.url, "SMSLEADS_STATE_DIR": str(tmp_path / "state")}
    with _proxy(tmp_path, env) as proxy:
        first = _send(proxy.base, key, text)
        proxy.kill()
    with _proxy(tmp_path, env, "--workers", "2") as proxy:
        again = _send(proxy.base, key, text)
    assert first.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert _sent(faulty, text) == 1


def test_two_proxies_on_a_restarted_redis_never_send_twice(tmp_path, faulty):
    faulty.plan("hang")
    text, key = TEXT.format("redis"), "k-redis"
    redis_port = free_port()
    with redis_process(tmp_path / "redis", port=redis_port) as (url, redis_server):
        env = {"SMSLEADS_API_URL": faulty.url, "REDIS_URL": url}
        with _proxy(tmp_path, env) as one, _proxy(tmp_path, env) as two:
            _in_flight(one.base, key, text)
            _until(lambda: _sent(faulty, text) == 1, "the send reached the upstream")
            one.kill()
            redis_server.send_signal(signal.SIGTERM)  # Redis restarts (its file kept)
            redis_server.wait(timeout=BOUND)
            faulty.plan()  # answering now, its counts start again
            with redis_process(tmp_path / "redis", port=redis_port):
                answer = _settled(two.base, key, text)
                with _proxy(tmp_path, env) as three:  # and a proxy started afterwards
                    again = _settled(three.base, key, text)
    for settled in (answer, again):
        assert settled.status_code == 409
        assert settled.json()["type"] == "/problems/outcome-unknown"
    assert _sent(faulty, text) == 0  # nothing sent again


def test_a_paused_redis_leaves_no_key_in_doubt_for_a_send_that_never_left(tmp_path, faulty):
    text, key = TEXT.format("paused"), "k-paused"
    with redis_process(tmp_path / "redis") as (url, redis_server):
        env = {"SMSLEADS_API_URL": faulty.url, "REDIS_URL": url}
        with _proxy(tmp_path, env) as proxy:
            os.kill(redis_server.pid, signal.SIGSTOP)
            try:
                refused = _send(proxy.base, key, text)
            finally:
                os.kill(redis_server.pid, signal.SIGCONT)  # the claim it held lands late
            assert refused.status_code == 503
            assert refused.json()["type"] == "/problems/idempotency-unavailable"
            assert _sent(faulty, text) == 0
            sent = _settled(proxy.base, key, text)  # once the late claim's lease is over
            replay = _send(proxy.base, key, text)
    assert sent.status_code == 202 and "idempotent-replayed" not in sent.headers
    assert replay.headers["idempotent-replayed"] == "true"
    assert _sent(faulty, text) == 1


def test_a_volatile_redis_stops_the_start(tmp_path):
    with redis_process(tmp_path / "redis", "--appendonly", "no") as (url, _):
        env = {**TIMEOUTS, "REDIS_URL": url, "SMSLEADS_PROXY_PORT": str(free_port())}
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SMSLEADS_")}
        import subprocess
        import sys
        done = subprocess.run([sys.executable, "-m", "proxy"], env={**environment, **env},
                              capture_output=True, text=True, timeout=BOUND)
    assert done.returncode != 0
    assert "append-only file is off" in done.stderr
    assert "--redis-volatile-ok" in done.stderr
