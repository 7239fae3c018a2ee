"""The app's services: started in order before it serves, stopped in reverse, a failed start
stopping the app; background work supervised."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from anyio.abc import TaskStatus
from starlette.datastructures import State
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.services import Service, background
from proxy.settings import Settings
from tests.conftest import BASIC, Recorder

BALANCE = b"<balance><status>0</status><message>OK</message><balance>7</balance></balance>"


def _recording(name: str, events: list[str], fail: bool = False) -> Service:
    @asynccontextmanager
    async def service(state: State) -> AsyncIterator[None]:
        events.append(f"start {name}")
        if fail:
            raise RuntimeError(f"{name} cannot start")
        setattr(state, name, f"{name} is up")
        try:
            yield
        finally:
            events.append(f"stop {name}")

    return service


def test_services_start_in_order_before_the_app_serves_and_stop_in_reverse():
    events: list[str] = []
    app = create_app(Settings(), transport=httpx.MockTransport(Recorder(BALANCE)),
                     services=(_recording("first", events), _recording("second", events)))
    with TestClient(app) as client:
        assert events == ["start first", "start second"]
        assert app.state.second == "second is up"
        assert client.get("/v1/balance", headers={"Authorization": BASIC}).json() == {
            "credits": 7}
    assert events == ["start first", "start second", "stop second", "stop first"]


def test_a_service_that_fails_to_start_stops_the_app_and_the_started_ones():
    events: list[str] = []
    app = create_app(Settings(), transport=httpx.MockTransport(Recorder(BALANCE)),
                     services=(_recording("first", events),
                               _recording("broken", events, fail=True),
                               _recording("never", events)))
    with pytest.raises(RuntimeError, match="broken cannot start"), TestClient(app):
        pass
    assert events == ["start first", "start broken", "stop first"]


async def test_background_work_runs_while_the_service_is_open_and_is_cancelled_after():
    ticks: list[int] = []
    cancelled = anyio.Event()

    async def work(*, task_status: TaskStatus[None]) -> None:
        task_status.started()
        try:
            while True:
                ticks.append(len(ticks))
                await anyio.sleep(0)
        finally:
            cancelled.set()

    async with background("ticker", work):
        while len(ticks) < 3:
            await anyio.sleep(0)
        assert not cancelled.is_set()
    assert cancelled.is_set()


async def test_background_work_that_fails_before_it_started_fails_the_start():
    async def work(*, task_status: TaskStatus[None]) -> None:
        raise OSError("no database")

    with pytest.raises(OSError, match="no database"):
        async with background("broken", work):
            pytest.fail("the service must not start")


async def test_background_work_that_crashes_later_is_logged_and_started_again(caplog):
    runs: list[int] = []
    waits: list[float] = []
    third = anyio.Event()

    async def work(*, task_status: TaskStatus[None]) -> None:
        task_status.started()
        runs.append(len(runs))
        if len(runs) >= 3:
            third.set()
            await anyio.sleep_forever()
        raise ValueError(f"crash {len(runs)}")

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    async with background("flaky", work, sleep=no_wait):
        await third.wait()
    assert runs == [0, 1, 2]
    assert waits == [1.0, 2.0]  # doubling between restarts
    failures = [r for r in caplog.records if r.getMessage().startswith("a background task failed")]
    assert [r.task for r in failures] == ["flaky", "flaky"]
    assert [str(r.exc_info[1]) for r in failures] == ["crash 1", "crash 2"]
