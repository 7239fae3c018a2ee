"""The spend guard (proxy/guard.py) as a client meets it: sends cut at a credential's rates and
credit budgets with nothing sent upstream, budgets starting again at midnight (or the hour) in
Israel on the app's clock, credits given back when a send was refused and kept when its outcome
is unknown, replays that cost nothing, reads never blocked, a key's own quotas; then real
processes, two workers on the SQLite state file and two proxies on one redis-server, cutting a
loop of sends at its limit between them."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.guard import POLICIES, period
from proxy.sandbox import Account, FixedClock, Sandbox
from proxy.sandbox import create_app as create_sandbox
from proxy.settings import Settings, SettingsError
from tests.conftest import BASIC, NOW, Clock, redis_process
from tests.processes import Server, running

ISRAEL = ZoneInfo("Asia/Jerusalem")
OTHER = Account("other", "other-token", 10_000)


def basic(username: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()}


def message(count: int, first: int = 0, text: str = "hi") -> dict[str, Any]:
    return {"sender": "Shop", "text": text,
            "recipients": [{"phone": f"05{20_000_000 + n:08d}"} for n in range(first,
                                                                             first + count)]}


@contextmanager
def guarded(clock: Clock | None = None, transport: httpx.AsyncBaseTransport | None = None,
            **settings: Any) -> Iterator[tuple[TestClient, Sandbox]]:
    """The proxy in front of a sandbox (or ``transport``), its guard set by ``settings``."""
    sandbox = Sandbox(clock=FixedClock(NOW), seed=1, accounts=[OTHER])
    app = create_app(Settings(upstream_url="http://sandbox.test/api", **settings),
                     transport=transport or httpx.ASGITransport(app=create_sandbox(sandbox)),
                     clock=clock or Clock())
    with TestClient(app, headers={"Authorization": BASIC}) as client:
        yield client, sandbox


def campaigns(sandbox: Sandbox, owner: str = "demo") -> int:
    return sum(campaign.owner == owner for campaign in sandbox.state.campaigns.values())


def policy(client: TestClient, name: str, **headers: str) -> dict[str, Any]:
    limits = client.get("/v1/limits", headers=headers)
    assert limits.status_code == 200, limits.text
    return next(p for p in limits.json()["policies"] if p["name"] == name)


# ── Budgets ───────────────────────────────────────────────────────────────────────────────


def test_a_send_that_would_cross_the_daily_budget_is_refused_with_nothing_sent():
    with guarded(daily_credits=5) as (client, sandbox):
        assert client.post("/v1/messages", json=message(3)).status_code == 202
        refused = client.post("/v1/messages", json=message(3, first=3))
        assert client.post("/v1/messages", json=message(2, first=6)).status_code == 202
        spent = policy(client, "daily-credits")
    assert refused.status_code == 429
    problem = refused.json()
    assert problem["type"] == "/problems/budget-exceeded"
    assert {key: problem[key] for key in ("violated_policies", "budget", "spent", "requested",
                                          "resets_at")} == {
        "violated_policies": ["daily-credits"], "budget": 5, "spent": 3, "requested": 3,
        "resets_at": "2026-11-26T00:00:00+02:00"}
    assert "Israel time" in problem["detail"] and "2026-11-26T00:00:00+02:00" in problem["detail"]
    assert refused.headers["retry-after"] == str(12 * 3600)  # noon to midnight
    assert refused.headers["ratelimit"] == f'"daily-credits";r=2;t={12 * 3600}'
    assert refused.headers["ratelimit-policy"] == (
        '"requests";q=50;w=1, "recipients";q=60000;qu="recipients";w=60, '
        '"daily-credits";q=5;qu="credits";w=86400')
    assert campaigns(sandbox) == 2 and sandbox.state.accounts["demo"].credits == 1000 - 5
    assert spent == {"name": "daily-credits", "unit": "credits", "quota": 5, "window": 86400,
                     "counts": "sends", "spent": 5, "remaining": 0,
                     "resets_at": "2026-11-26T00:00:00+02:00"}


def test_the_daily_budget_starts_again_at_midnight_in_israel():
    clock = Clock()  # 2026-11-25 12:00 in Israel
    with guarded(clock, daily_credits=2) as (client, sandbox):
        assert client.post("/v1/messages", json=message(2)).status_code == 202
        clock.advance(hours=11, minutes=59, seconds=59)
        late = client.post("/v1/messages", json=message(1, first=2))
        clock.advance(seconds=1)
        fresh = client.post("/v1/messages", json=message(2, first=3))
        after = policy(client, "daily-credits")
    assert (late.status_code, late.headers["retry-after"]) == (429, "1")
    assert fresh.status_code == 202
    assert (after["spent"], after["resets_at"]) == (2, "2026-11-27T00:00:00+02:00")
    assert campaigns(sandbox) == 2


def test_the_hourly_budget_starts_again_on_the_hour():
    clock = Clock()
    with guarded(clock, hourly_credits=2) as (client, _):
        assert client.post("/v1/messages", json=message(2)).status_code == 202
        clock.advance(minutes=59, seconds=59)
        late = client.post("/v1/messages", json=message(1, first=2))
        clock.advance(seconds=1)
        fresh = client.post("/v1/messages", json=message(1, first=3))
    assert late.status_code == 429
    assert late.json()["resets_at"] == "2026-11-25T13:00:00+02:00"
    assert fresh.status_code == 202


def test_a_day_in_israel_is_23_hours_when_the_clocks_go_forward():
    daily, hourly = POLICIES[2], POLICIES[3]
    assert [t.isoformat() for t in period(daily, datetime(2027, 3, 26, 12, tzinfo=ISRAEL))] == [
        "2027-03-26T00:00:00+02:00", "2027-03-27T00:00:00+03:00"]
    assert [t.isoformat() for t in period(hourly, datetime(2027, 3, 26, 1, 30, tzinfo=ISRAEL))
            ] == ["2027-03-26T01:00:00+02:00", "2027-03-26T03:00:00+03:00"]


def test_a_send_to_a_contact_list_is_counted_as_its_preview_counts_it():
    with guarded(daily_credits=6) as (client, sandbox):
        listed = client.post("/v1/contact-lists", json={
            "name": "vip", "contacts": [{"phone": f"05{20_000_000 + n:08d}"} for n in range(3)]})
        body = {**message(2, first=2), "contact_list_ids": [listed.json()["id"]]}
        price = client.post("/v1/messages/preview", json=body).json()  # 3 members, 1 more
        sent = client.post("/v1/messages", json=body)
        spent = policy(client, "daily-credits")["spent"]
        refused = client.post("/v1/messages", json={**body, "recipients": body["recipients"][:1]})
    assert price["credits"] == 4 and sent.status_code == 202
    assert spent == price["credits"]
    assert (refused.status_code, refused.json()["requested"]) == (429, 3)  # the list again
    assert campaigns(sandbox) == 1


class Script:
    """An upstream that answers each send as told, and the credits (GET /v1/limits asks)."""

    def __init__(self, *answers: bytes | Exception) -> None:
        self.answers, self.sends = list(answers), 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if b"<balance>" in request.content:
            return httpx.Response(200, content=b"<balance><status>0</status><message>ok"
                                               b"</message><balance>7</balance></balance>")
        if b"<sms>" not in request.content:
            raise AssertionError(f"only sends are expected, not {request.content[:80]!r}")
        self.sends += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(200, content=answer)


SENT = b"<sms><status>0</status><message>ok</message><shipment_id>9</shipment_id></sms>"


@pytest.mark.parametrize(("answer", "status", "kept"), [
    (SENT, 202, 2),
    (httpx.ReadTimeout("slow"), 504, 2),  # it may have gone out: the charge stays
    (b"<sms><status>4</status><message>Not enough credit</message></sms>", 402, 0),
    (b"<sms><status>8</status><message>All blacklisted</message></sms>", 422, 0),
    (b"<sms><status>3</status><message>Wrong token</message></sms>", 401, 0),
    (httpx.ConnectError("refused"), 503, 0),  # it never reached SMS Leads
])
def test_credits_are_kept_when_a_send_went_out_or_may_have_and_given_back_when_refused(
        answer, status, kept):
    script = Script(answer)
    with guarded(transport=httpx.MockTransport(script), daily_credits=10,
                 read_retries=0) as (client, _):
        answered = client.post("/v1/messages", json=message(2),
                               headers={"Idempotency-Key": "k-1"})
        spent = policy(client, "daily-credits")["spent"]
    assert answered.status_code == status
    assert (script.sends, spent) == (1, kept)


def test_an_idempotent_replay_costs_nothing():
    key = {"Idempotency-Key": "order-17"}
    with guarded(daily_credits=3, recipients_per_minute=3) as (client, sandbox):
        first = client.post("/v1/messages", json=message(1), headers=key)
        replays = [client.post("/v1/messages", json=message(1), headers=key) for _ in range(5)]
        budget, recipients = policy(client, "daily-credits"), policy(client, "recipients")
        others = [client.post("/v1/messages", json=message(1, first=n),
                              headers={"Idempotency-Key": f"k-{n}"}) for n in (1, 2, 3)]
        after = client.post("/v1/messages", json=message(1), headers=key)  # past the budget
    assert first.status_code == 202
    assert all(r.status_code == 202 and r.headers["idempotent-replayed"] == "true"
               for r in [*replays, after])
    assert (budget["spent"], recipients["remaining"]) == (1, 2)
    assert [r.status_code for r in others] == [202, 202, 429]
    assert campaigns(sandbox) == 3


def test_the_limits_are_read_with_the_account_s_credits_and_checked_credentials():
    with guarded(daily_credits=5) as (client, _):
        client.post("/v1/messages", json=message(2))
        mine = client.get("/v1/limits").json()
        wrong = client.get("/v1/limits", headers=basic("demo", "not-the-token"))
    assert (mine["time_zone"], mine["available_credits"]) == ("Asia/Jerusalem", 998)
    assert [p["name"] for p in mine["policies"]] == ["requests", "recipients", "daily-credits"]
    assert (wrong.status_code, wrong.json()["type"]) == (401, "/problems/invalid-credentials")


def test_reads_and_previews_are_never_limited():
    with guarded(daily_credits=0, requests_per_second=1) as (client, sandbox):
        sends = [client.post("/v1/messages", json=message(1)) for _ in range(2)]
        reads = [client.get("/v1/balance").status_code for _ in range(5)]
        previews = [client.post("/v1/messages/preview", json=message(1)).status_code
                    for _ in range(5)]
    assert [r.json()["violated_policies"] for r in sends] == [["daily-credits"], ["requests"]]
    assert sends[1].headers["ratelimit-policy"].startswith('"requests";q=1;w=1')
    assert reads == [200] * 5 and previews == [200] * 5
    assert campaigns(sandbox) == 0


def test_a_send_larger_than_a_minutes_recipients_goes_out_only_into_an_empty_window():
    with guarded(recipients_per_minute=3) as (client, sandbox):
        large = client.post("/v1/messages", json=message(5))
        small = client.post("/v1/messages", json=message(1, first=5))
        other = client.post("/v1/messages", json=message(5), headers=basic("other", "other-token"))
        larger = client.post("/v1/messages", json=message(4, first=5),
                             headers=basic("other", "other-token"))
    assert (large.status_code, small.status_code, other.status_code) == (202, 429, 202)
    wait = int(small.headers["retry-after"])
    assert 1 <= wait <= 61 and small.headers["ratelimit"] == f'"recipients";r=0;t={wait}'
    assert "more than a minute's" in larger.json()["detail"]
    assert (campaigns(sandbox), campaigns(sandbox, "other")) == (1, 1)


def test_refusals_are_counted_by_the_policy_crossed():
    with guarded(daily_credits=1) as (client, _):
        for n in range(3):
            client.post("/v1/messages", json=message(1, first=n))
        scrape = client.get("/metrics").text
    assert 'smsleads_proxy_guard_refusals_total{reason="daily-credits"} 2.0' in scrape


# ── Single-tenant mode: each key its own quotas ────────────────────────────────────────────

KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"


def tenant_settings(tmp_path: Path, lines: str, **settings: Any) -> Settings:
    keys = tmp_path / "keys"
    keys.write_text(lines)
    return Settings(username="demo", token="demo-token", api_keys_file=str(keys), **settings)


def test_a_key_of_the_keys_file_has_its_own_quotas(tmp_path):
    settings = tenant_settings(tmp_path, f"# the shop\n{KEY_A} daily-credits=1\n"
                                         f"{KEY_B} recipients-per-minute=none\n",
                               recipients_per_minute=2)
    sandbox = Sandbox(clock=FixedClock(NOW), seed=1)
    app = create_app(settings, transport=httpx.ASGITransport(app=create_sandbox(sandbox)),
                     clock=Clock())
    a, b = ({"Authorization": f"Bearer {key}"} for key in (KEY_A, KEY_B))
    with TestClient(app) as client:
        by_a = [client.post("/v1/messages", json=message(1, first=n), headers=a).status_code
                for n in range(2)]
        by_b = [client.post("/v1/messages", json=message(2, first=n), headers=b).status_code
                for n in range(3)]
        names = {key: [p["name"] for p in client.get("/v1/limits", headers=h).json()["policies"]]
                 for key, h in (("a", a), ("b", b))}
    assert by_a == [202, 429] and by_b == [202, 202, 202]
    assert names == {"a": ["requests", "recipients", "daily-credits"], "b": ["requests"]}


@pytest.mark.parametrize(("line", "said"), [
    (f"{KEY_A} colour=red", "one of requests-per-second, recipients-per-minute, daily-credits"),
    (f"{KEY_A} daily-credits=-1", "daily-credits='-1' (must be 0 or more)"),
    (f"{KEY_A} requests-per-second=0", "must be a positive integer"),
    (f"{KEY_A} daily-credits", "as name=value"),
    (f"{KEY_A} daily-credits=1 daily-credits=2", "each once"),
])
def test_a_wrong_setting_of_a_key_stops_the_start(tmp_path, line, said):
    with pytest.raises(SettingsError, match="--api-keys-file") as refused:
        create_app(tenant_settings(tmp_path, line + "\n"))
    assert said in str(refused.value)


# ── Real processes: a loop cut at its limit, wherever its sends land ─────────────────────

LIMIT = 5


def accounts(tmp_path: Path) -> dict[str, str]:
    file = tmp_path / "accounts.json"
    file.write_text(json.dumps([{"username": "other", "token": "other-token",
                                 "credits": 10_000}]))
    return {"SANDBOX_ACCOUNTS": str(file), "SANDBOX_SEED": "1", "SANDBOX_DLR_DELAY": "0"}


def send(base: str, body: dict[str, Any], auth: dict[str, str] | None = None,
         key: str | None = None) -> tuple[float, httpx.Response, float]:
    """One send on a connection of its own (so that the kernel picks the worker), with the
    moments it started and was answered."""
    headers = {**(auth or {"Authorization": BASIC}), "Connection": "close",
               **({"Idempotency-Key": key} if key else {})}
    started = time.monotonic()
    answer = httpx.post(base + "/v1/messages", json=body, headers=headers, timeout=60)
    return started, answer, time.monotonic()


def assert_cut_at_the_limit(sent: list[tuple[float, httpx.Response, float]],
                            openers: int) -> None:
    """Exactly LIMIT went through; every other one is a 429 whose Retry-After is the end of
    the window the first send opened, 60 s after it: the first of ``sent[:openers]``, made
    within their time, opened it; each refusal was computed within its own request's."""
    accepted = [answer for _, answer, _ in sent if answer.status_code == 202]
    refused = [(start, answer, end) for start, answer, end in sent if answer.status_code != 202]
    assert len(accepted) == LIMIT
    opened_after = min(start for start, _, _ in sent[:openers])
    opened_by = max(end for _, _, end in sent[:openers])
    for start, answer, end in refused:
        assert answer.status_code == 429, answer.text
        assert answer.json()["violated_policies"] == ["recipients"]
        wait = int(answer.headers["retry-after"])
        assert answer.headers["ratelimit"] == f'"recipients";r=0;t={wait}'
        assert opened_after + 60 - end < wait <= opened_by + 61 - start


def test_two_workers_on_the_state_file_cut_a_loop_of_sends_at_its_limit(tmp_path):
    args = ["--sandbox", "--workers", "2", "--recipients-per-minute", str(LIMIT),
            "--requests-per-second", "none"]
    with running(tmp_path, args, env=accounts(tmp_path)) as server:
        sent: list[tuple[float, httpx.Response, float]] = []
        with ThreadPoolExecutor(4) as pool:
            # Until both workers have refused some (the kernel decides who accepts); bounded.
            for batch in range(25):
                sent += pool.map(lambda n: send(server.base, message(1, first=n)),
                                 range(batch * 8, batch * 8 + 8))
                if len(_pids(server, 429)) == 2:
                    break
        other = send(server.base, message(1), basic("other", "other-token"))[1]
        assert len(_pids(server, 202) | _pids(server, 429)) == 2, "one worker answered all"
    assert_cut_at_the_limit(sent, openers=8)  # the first batch, all sent at once
    assert other.status_code == 202  # another credential's limit is its own


def test_a_rate_turned_off_by_its_flag_is_off_in_the_process_that_serves(tmp_path):
    """The served app reads its settings from the environment the command sets: ``none``
    must reach it as chosen, not the default rates back."""
    args = ["--sandbox", "--requests-per-second", "none", "--recipients-per-minute", "none",
            "--daily-credits", "500"]
    with running(tmp_path, args, env=accounts(tmp_path)) as server:
        limits = httpx.get(server.base + "/v1/limits", headers={"Authorization": BASIC})
    assert [p["name"] for p in limits.json()["policies"]] == ["daily-credits"]


def _pids(server: Server, status: int) -> set[int]:
    return {line["pid"] for line in server.log_lines()
            if line.get("route") == "/v1/messages" and line.get("status") == status}


def test_two_proxies_on_one_redis_share_the_limits_and_the_budget(tmp_path):
    args = ["--sandbox", "--recipients-per-minute", str(LIMIT), "--daily-credits", "6"]
    with redis_process(tmp_path / "redis") as (url, _):
        env = {**accounts(tmp_path), "REDIS_URL": url}
        with running(tmp_path, args, env=env) as one, running(tmp_path, args, env=env) as two:
            sent = [send((one, two)[n % 2].base, message(1, first=n), key=f"k-{n}")
                    for n in range(12)]
            replay = send(two.base, message(1, first=0), key="k-0")[1]  # one's first send
            other = basic("other", "other-token")
            spent = [send(one.base, message(2), other)[1], send(two.base, message(2, first=2),
                                                                 other)[1]]
            crossing = send(two.base, message(3, first=4), other)[1]
            seen = httpx.get(two.base + "/sandbox/api/state").json()
    assert_cut_at_the_limit(sent, openers=1)
    assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
    assert [answer.status_code for answer in spent] == [202, 202]
    assert crossing.status_code == 429
    assert {k: crossing.json()[k] for k in ("budget", "spent", "requested")} == {
        "budget": 6, "spent": 4, "requested": 3}
    # Nothing of the refused send reached SMS Leads: two's only campaign for "other" is the
    # one it accepted, and the account was charged for it alone.
    mine = [c for c in seen["campaigns"] if c["account"] == "other"]
    assert len(mine) == 1
    assert next(a for a in seen["accounts"] if a["username"] == "other")["credits"] == 10_000 - 2
