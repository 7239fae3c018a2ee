"""How the proxy serves HTTP (proxy/server.py), tried on a real ``python -m proxy`` with real
sockets: headers too large or too slow, more connections than a worker holds, a body too large
for every common client, SIGTERM to several workers. Every wait is bounded; no test asserts how
fast anything happened, only what the client saw."""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import requests

from tests.processes import Server, running

BOUND = 30.0  # seconds: how long a test waits for an outcome before it fails
BASIC = "Basic ZGVtbzpkZW1vLXRva2Vu"  # demo:demo-token, the sandbox's account
CAP = 8
LIMITS = ["--sandbox", "--header-timeout", "2", "--max-connections", str(CAP),
          "--max-body-bytes", "100000"]
BIG_BODY = b'{"text": "' + b"x" * 20_000_000 + b'"}'  # well past what socket buffers absorb


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running(tmp_path_factory.mktemp("server"), LIMITS) as proxy:
        yield proxy


def connect(server: Server) -> socket.socket:
    address = urlsplit(server.base)
    sock = socket.create_connection((address.hostname, address.port), timeout=BOUND)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    """Everything the server sent until it closed (a reset after its answer included)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    sock.close()
    return data


def problem_of(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/problem+json" in head.lower(), answer[:500]
    assert b"connection: close" in head.lower()
    return int(head.split()[1]), json.loads(body)


def busy(server: Server) -> socket.socket:
    """A connection whose request is running: the app is reading its body (the server said
    100 Continue), which the client holds back."""
    sock = connect(server)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nAuthorization: " + BASIC.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
    return sock


# ── Headers ──────────────────────────────────────────────────────────────────────────────────


def test_headers_over_the_limit_get_431_and_the_rest_is_never_read(server):
    sock = connect(server)
    sent = 0
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: proxy\r\nX-Big: ")
        while sent < 100_000_000:  # a 100 MB header value
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass  # the proxy closed the connection
    assert sent < 100_000_000
    status, problem = problem_of(read_to_end(sock))
    assert status == 431 and problem["type"] == "/problems/headers-too-large"
    assert "16384 bytes" in problem["detail"]
    assert httpx.get(server.base + "/healthz").status_code == 200


def test_headers_under_the_limit_are_read(server):
    response = httpx.get(server.base + "/healthz", headers={"X-Big": "a" * 15_000})
    assert response.status_code == 200


def trickle(socks: list[socket.socket], deadline: float) -> dict[socket.socket, bytes]:
    """Send each connection one more byte of an endless header, every 0.2 s, until the proxy
    has closed them all (or the deadline passes); what each one got back."""
    answers: dict[socket.socket, bytes] = {}
    while len(answers) < len(socks) and time.monotonic() < deadline:
        for sock in socks:
            if sock not in answers:
                try:
                    sock.send(b"a")
                except OSError:
                    answers[sock] = read_to_end(sock)
        readable, _, _ = select.select([s for s in socks if s not in answers], [], [], 0.2)
        for sock in readable:
            answers[sock] = read_to_end(sock)
    return answers


def test_slow_headers_are_cut_off_and_cannot_lock_clients_out(server):
    slow = [connect(server) for _ in range(CAP + 4)]  # more than the worker holds
    for sock in slow:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: proxy\r\nX-Slow: ")
    response = httpx.get(server.base + "/v1/balance", auth=("demo", "demo-token"))
    assert response.status_code == 200 and "credits" in response.json()

    answers = trickle(slow, time.monotonic() + BOUND)
    assert len(answers) == len(slow), "a connection sending its headers slowly stayed open"
    timed_out = [answer for answer in answers.values() if answer]
    closed_for_room = [answer for answer in answers.values() if not answer]
    assert timed_out and closed_for_room
    for answer in timed_out:
        status, problem = problem_of(answer)
        assert status == 408 and problem["type"] == "/problems/request-timeout"


def test_a_body_sent_a_byte_at_a_time_is_cut_off_and_others_are_served(tmp_path):
    """The header timeout ends where the body begins: a body has --body-timeout to arrive."""
    with running(tmp_path, ["--sandbox", "--body-timeout", "1"]) as proxy:
        slow = [connect(proxy) for _ in range(4)]
        for sock in slow:
            sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nAuthorization: " +
                         BASIC.encode() + b"\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
        answered = httpx.get(proxy.base + "/v1/balance", auth=("demo", "demo-token"))
        answers = trickle(slow, time.monotonic() + BOUND)  # a byte each, every 0.2 s
    assert answered.status_code == 200
    assert len(answers) == len(slow), "a body sent slowly kept its connection"
    for answer in answers.values():
        status, problem = problem_of(answer)
        assert status == 408 and problem["type"] == "/problems/request-timeout"
        assert problem["detail"] == "the body did not arrive within 1 s of its headers"


def test_a_connection_that_never_sends_is_closed_without_an_answer(server):
    sock = connect(server)
    readable, _, _ = select.select([sock], [], [], BOUND)
    assert readable and read_to_end(sock) == b""


# ── The connection cap ───────────────────────────────────────────────────────────────────────


def test_when_every_connection_runs_a_request_a_new_one_gets_503_at_once(server):
    running_requests = [busy(server) for _ in range(CAP)]
    response = httpx.get(server.base + "/healthz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"] == "/problems/server-busy"

    first = running_requests.pop()
    first.sendall(b"{}")  # its request completes: its connection is free to be taken
    assert read_to_end(first).startswith(b"HTTP/1.1 422")
    assert httpx.get(server.base + "/healthz").status_code == 200
    for sock in running_requests:
        sock.close()


# ── A body over the limit, as each client sends it ───────────────────────────────────────────


def with_curl(expect: str) -> Callable[[str, Path], tuple[int, dict]]:
    def post(url: str, tmp_path: Path) -> tuple[int, dict]:
        (tmp_path / "body").write_bytes(BIG_BODY)
        done = subprocess.run(
            ["curl", "-sS", "-o", str(tmp_path / "answer"), "-w", "%{http_code}", "-X", "POST",
             "--data-binary", f"@{tmp_path / 'body'}", "-H", "Content-Type: application/json",
             "-H", f"Authorization: {BASIC}", "-H", expect, "--max-time", str(BOUND), url],
            capture_output=True, text=True, timeout=BOUND + 5)
        assert done.returncode == 0, done.stderr
        return int(done.stdout), json.loads((tmp_path / "answer").read_bytes())
    return post


def with_requests(url: str, tmp_path: Path) -> tuple[int, dict]:
    response = requests.post(url, data=BIG_BODY, timeout=BOUND, headers={
        "Content-Type": "application/json", "Authorization": BASIC})
    return response.status_code, response.json()


def with_httpx(url: str, tmp_path: Path) -> tuple[int, dict]:
    response = httpx.post(url, content=BIG_BODY, timeout=BOUND, headers={
        "Content-Type": "application/json", "Authorization": BASIC})
    return response.status_code, response.json()


def with_httpx_chunked(url: str, tmp_path: Path) -> tuple[int, dict]:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(BIG_BODY), 1_000_000):
            yield BIG_BODY[start:start + 1_000_000]

    response = httpx.post(url, content=chunks(), timeout=BOUND, headers={
        "Content-Type": "application/json", "Authorization": BASIC})
    return response.status_code, response.json()


def with_urllib(url: str, tmp_path: Path) -> tuple[int, dict]:
    """urllib sends ``Connection: close`` and writes the whole body before it reads."""
    request = urllib.request.Request(url, data=BIG_BODY, method="POST", headers={
        "Content-Type": "application/json", "Authorization": BASIC})
    try:
        with urllib.request.urlopen(request, timeout=BOUND) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


@pytest.mark.parametrize("post", [
    with_curl("Expect:"), with_curl("Expect: 100-continue"), with_requests, with_httpx,
    with_httpx_chunked, with_urllib,
], ids=["curl", "curl-expect-100-continue", "requests", "httpx", "httpx-chunked", "urllib"])
def test_every_common_client_reads_the_413_for_a_body_over_the_limit(server, tmp_path, post):
    status, problem = post(server.base + "/v1/messages", tmp_path)
    assert status == 413 and problem["type"] == "/problems/payload-too-large"


# ── Shutdown ─────────────────────────────────────────────────────────────────────────────────


def attempt(server: Server) -> str:
    """One new connection's fate: answered, or refused; a hang fails (socket timeout)."""
    try:
        sock = connect(server)
    except (ConnectionRefusedError, ConnectionResetError):  # reset: it was in the backlog
        return "refused"                                      # when the socket stopped listening
    with sock:
        sock.settimeout(5.0)
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
            answer = read_to_end(sock)
        except TimeoutError:
            return "hung"
        except ConnectionResetError:  # accepted into the backlog, reset as the socket closed
            return "refused"
    return "answered" if answer.startswith(b"HTTP/1.1 200") else "closed"


def test_sigterm_to_several_workers_refuses_new_connections_while_requests_finish(tmp_path):
    with running(tmp_path, ["--sandbox", "--workers", "2"]) as proxy:
        with busy(proxy) as held:  # closed even when the test fails
            proxy.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + BOUND
            fates = [attempt(proxy)]  # until the signal lands: answered (or closed unanswered)
            while fates[-1] in ("answered", "closed") and time.monotonic() < deadline:
                fates.append(attempt(proxy))
            assert fates[-1] == "refused", fates
            assert proxy.process.poll() is None  # still finishing the held request
            held.sendall(b"{}")
            assert read_to_end(held).startswith(b"HTTP/1.1 422")
        assert proxy.process.wait(BOUND) == 0
