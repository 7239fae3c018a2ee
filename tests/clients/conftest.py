from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.clients.support import LiveProxy, live_proxy


@pytest.fixture(scope="session")
def proxy() -> Iterator[LiveProxy]:
    """One proxy with its embedded sandbox for every client scenario of the session."""
    with live_proxy() as running:
        yield running
