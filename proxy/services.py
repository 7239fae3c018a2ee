"""The app's long-lived parts, started in order when it starts and stopped in reverse.

    app = Starlette(routes, lifespan=lifespan([open_upstream, open_ledger, poller.service]))

A service is an async context manager factory given the app's ``state``: it opens what it owns
(a connection pool, a key store), may put it on the state for endpoints to use, and closes it
on the way out. A service that fails to start stops the start: the services already started
are stopped in reverse and the app does not serve (uvicorn exits non-zero).

Work that runs without a request (a poller, a dispatcher) is a :func:`background` service: a
task the app owns, started before the app serves, restarted after a crash, and cancelled at
shutdown. A request handler never starts a task it does not own.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus
from starlette.datastructures import State

Service = Callable[[State], AbstractAsyncContextManager[None]]
Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]

RESTART_FIRST, RESTART_MAX = 1.0, 60.0  # seconds before a crashed task runs again, doubling

log = logging.getLogger("smsleads_proxy.services")


def lifespan(services: Sequence[Service]) -> Lifespan:
    """Starlette's ``lifespan``: each service in order, then serve, then each in reverse."""

    @asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            for service in services:
                await stack.enter_async_context(service(app.state))
            yield

    return run


class Work(Protocol):
    """A long-running task: calls ``task_status.started()`` once it is ready to work, then runs
    until cancelled."""

    def __call__(self, *, task_status: TaskStatus[None]) -> Awaitable[None]: ...


class _Started:
    """The task status handed to each run of a work: only the first ``started()`` counts."""

    def __init__(self, outer: TaskStatus[None]) -> None:
        self.outer, self.done = outer, False

    def started(self, value: None = None) -> None:
        if not self.done:
            self.done = True
            self.outer.started()


async def _supervise(name: str, work: Work, sleep: Callable[[float], Awaitable[None]], *,
                     task_status: TaskStatus[None]) -> None:
    status, delay = _Started(task_status), RESTART_FIRST
    while True:
        try:
            await work(task_status=status)
        except Exception:
            if not status.done:
                raise  # it never got going: the app's start fails with it
            log.exception("a background task failed; it will start again",
                          extra={"task": name, "restart_in_s": delay})
        else:
            if not status.done:
                raise RuntimeError(f"the background task {name!r} ended before it started")
            log.error("a background task ended by itself; it will start again",
                      extra={"task": name, "restart_in_s": delay})
        await sleep(delay)
        delay = min(RESTART_MAX, delay * 2)


@asynccontextmanager
async def background(name: str, work: Work, *,
                     sleep: Callable[[float], Awaitable[None]] = anyio.sleep
                     ) -> AsyncIterator[None]:
    """``work`` as a service. A failure before it reports started stops the app's start; a
    crash after that is logged and the work started again after 1 s, then 2, 4 ... 60 s. At
    shutdown the task is cancelled, and the service ends when the task has."""
    try:
        async with anyio.create_task_group() as group:
            await group.start(functools.partial(_supervise, name, work, sleep))
            yield
            group.cancel_scope.cancel()
    except BaseExceptionGroup as errors:  # anyio groups even a single failure
        if len(errors.exceptions) == 1:
            raise errors.exceptions[0] from errors.exceptions[0].__cause__
        raise


__all__ = ["Lifespan", "Service", "Work", "background", "lifespan"]
