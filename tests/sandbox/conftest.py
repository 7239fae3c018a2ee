from __future__ import annotations

import pytest

from proxy.sandbox import FixedClock, Sandbox
from tests.sandbox.support import NOW, Client


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def sandbox(clock: FixedClock) -> Sandbox:
    return Sandbox(clock=clock, seed=1)


@pytest.fixture
def client(sandbox: Sandbox) -> Client:
    return Client(sandbox)
