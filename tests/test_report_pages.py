"""Every report, complete (issue 12), as a user sees it over HTTP: ``python -m proxy --sandbox``,
and the proxy in front of ``python -m proxy.sandbox``. The sandbox's clock starts three weeks
ago and moves 15 seconds an exchange (--clock, --tick), so sends made one after another land
on minutes of their own, the same in every run."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import sandbox_process
from tests.processes import ROOT, Server, running

START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=21)
TICK = 15  # seconds of the sandbox's clock per exchange
ACCOUNTS = [{"username": name, "token": f"{name}-token", "credits": 10**6}
            for name in ("pager", "burst", "tagged")]
LINK = re.compile(r'^<([^>]+)>; rel="next"$')


def _since(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).isoformat()


@pytest.fixture(scope="module", params=["embedded", "standalone"])
def proxy(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    clock = ["--clock", START.isoformat(), "--tick", str(TICK)]
    if request.param == "embedded":
        accounts = tmp / "accounts.json"
        accounts.write_text(json.dumps(ACCOUNTS))
        env = {"SANDBOX_ACCOUNTS": str(accounts), "SANDBOX_SEED": "1", "SANDBOX_DLR_DELAY": "0",
               "SANDBOX_CLOCK": clock[1], "SANDBOX_TICK": clock[3]}
        with running(tmp, ["--sandbox"], env=env) as server:
            yield server
    else:
        with sandbox_process(ACCOUNTS, tmp, *clock) as url, \
                running(tmp, ["--upstream-url", url]) as server:
            yield server


def client(proxy: Server, username: str) -> httpx.Client:
    return httpx.Client(base_url=proxy.base, auth=(username, f"{username}-token"), timeout=60)


def send(api: httpx.Client, first: int, count: int, ids: str | None) -> None:
    recipients: list[dict[str, Any]] = [{"phone": f"+9725{n:08d}"}
                                        for n in range(20_000_000 + first,
                                                       20_000_000 + first + count)]
    if ids is not None:
        for n, recipient in enumerate(recipients, first):
            recipient["external_id"] = f"{ids}-{n}"
    answer = api.post("/v1/messages", json={"sender": "Pager", "text": "Your order shipped",
                                            "recipients": recipients})
    assert answer.status_code == 202, answer.text


def walk(api: httpx.Client, path: str, params: Any) -> list[httpx.Response]:
    """Every page, following the Link header (RFC 8288) as a generic client would."""
    pages = [api.get(path, params=params)]
    while True:
        page = pages[-1]
        assert page.status_code == 200, page.text
        if "next_cursor" not in page.json():
            assert "link" not in page.headers
            return pages
        [url] = LINK.findall(page.headers["link"])
        assert httpx.URL(url).params["cursor"] == page.json()["next_cursor"]
        pages.append(api.get(url))
        assert len(pages) < 100


@pytest.fixture(scope="module")
def sent(proxy: Server) -> Server:
    """pager: 2,500 recipients with ids, 100 a send, over six minutes; burst: 1,500 without
    ids in one send; tagged: 1,500 with ids in one send."""
    with client(proxy, "pager") as pager:
        for first in range(0, 2500, 100):
            send(pager, first, 100, "order")
    with client(proxy, "burst") as burst:
        send(burst, 0, 1500, None)
    with client(proxy, "tagged") as tagged:
        send(tagged, 0, 1500, "parcel")
    return proxy


def test_paging_a_30_day_window_gives_the_2500_reports_of_three_weeks_ago_each_once(sent):
    with client(sent, "pager") as pager:
        pages = walk(pager, "/v1/reports/dlr", {"from": _since(30), "limit": 300})
    rows = [row for page in pages for row in page.json()["data"]]
    ids = Counter(row["external_id"] for row in rows)
    assert len(ids) == 2500 and set(ids.values()) == {1}
    assert {f"order-{n}" for n in range(2500)} == set(ids)
    dates = [datetime.fromisoformat(row["reported_at"]) for row in rows]
    assert dates == sorted(dates)  # oldest first
    assert dates[0] >= START and dates[-1] <= START + timedelta(minutes=10)
    assert len(set(dates)) >= 5  # several minutes, so pages ended inside minutes
    assert len(pages) == 9 and all(len(p.json()["data"]) <= 300 for p in pages)
    assert not any("incomplete" in page.json() for page in pages)


def test_1500_reports_of_one_minute_by_date_are_1000_and_said_so(sent):
    with client(sent, "burst") as burst:
        pages = walk(burst, "/v1/reports/dlr", {"from": _since(30), "limit": 400})
    rows = [row for page in pages for row in page.json()["data"]]
    assert len(rows) == 1000 and len({row["reported_at"] for row in rows}) == 1
    minute = rows[0]["reported_at"]
    for page in pages:  # every page of that minute says it
        assert page.json()["incomplete"] == [{"minute": minute, "reachable": 1000}]
        assert page.headers["x-smsleads-incomplete"] == f'"{minute}";reachable=1000'


def test_1500_reports_of_one_minute_by_external_id_are_all_there(sent):
    params: list[tuple[str, str]] = [("from", _since(30))]
    params += [("external_id", f"parcel-{n}") for n in range(1500)]
    with client(sent, "tagged") as tagged:
        pages = []
        answer = tagged.get("/v1/reports/dlr", params=params)
        while True:
            assert answer.status_code == 200, answer.text
            pages.append(answer.json())
            if "next_cursor" not in pages[-1]:
                break
            # A link holding 1,500 ids would pass the 8,000 characters any server reads.
            assert "link" not in answer.headers
            answer = tagged.get("/v1/reports/dlr",
                                params=[*params, ("cursor", pages[-1]["next_cursor"])])
    ids = Counter(row["external_id"] for page in pages for row in page["data"])
    assert set(ids) == {f"parcel-{n}" for n in range(1500)} and set(ids.values()) == {1}
    assert not any("incomplete" in page for page in pages)


def test_a_cursor_altered_of_another_account_or_of_another_query_is_a_problem(sent):
    query = {"from": _since(30), "limit": 100}
    with client(sent, "pager") as pager, client(sent, "burst") as burst:
        cursor = pager.get("/v1/reports/dlr", params=query).json()["next_cursor"]
        flipped = cursor[:20] + ("A" if cursor[20] != "A" else "B") + cursor[21:]
        answers = {
            "altered": pager.get("/v1/reports/dlr", params={**query, "cursor": flipped}),
            "garbage": pager.get("/v1/reports/dlr", params={**query, "cursor": "x" * 80}),
            "another account": burst.get("/v1/reports/dlr", params={**query, "cursor": cursor}),
            "another query": pager.get("/v1/reports/dlr", params={
                **query, "from": _since(29), "cursor": cursor}),
            "another feed": pager.get("/v1/incoming-messages",
                                      params={**query, "cursor": cursor}),
        }
        same = pager.get("/v1/reports/dlr", params={**query, "limit": 7, "cursor": cursor})
    for case, answer in answers.items():
        assert answer.status_code == 400, case
        assert answer.headers["content-type"] == "application/problem+json", case
        assert answer.json()["type"] == "/problems/invalid-cursor", case
    assert "another query" in answers["another query"].json()["detail"]
    assert "other credentials" in answers["another account"].json()["detail"]
    assert same.status_code == 200 and len(same.json()["data"]) == 7  # limit may change


def test_past_365_days_is_still_a_422(sent):
    with client(sent, "pager") as pager:
        answer = pager.get("/v1/reports/dlr", params={"from": _since(366)})
    assert answer.status_code == 422
    assert answer.json()["errors"] == [
        {"pointer": "/query/from", "detail": "must be at most 365 days in the past"}]


def test_the_readmes_paging_loop_prints_every_row_once(sent):
    with client(sent, "demo") as demo:
        send(demo, 5000, 250, "readme")
    block = re.search(r"## Pages\n.*?```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block is not None
    script = block.group(1).replace("http://127.0.0.1:8080", sent.base).replace(
        "2026-11-01T00:00:00%2B02:00", _since(30).replace("+", "%2B")).replace(
        "limit=500", "limit=100")
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert sorted(row["external_id"] for row in rows) == sorted(
        f"readme-{n}" for n in range(5000, 5250))
