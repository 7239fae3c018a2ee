from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.processes import Server, running


@pytest.fixture(scope="session")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m proxy --sandbox`` on a free loopback port, for every client scenario of the
    session. Its sandbox reports deliveries at once (SANDBOX_DLR_DELAY, proxy/sandbox/
    __main__.py), so a scenario reads reports right after sending, with no waiting."""
    with running(tmp_path_factory.mktemp("proxy"), ["--sandbox"],
                 env={"SANDBOX_DLR_DELAY": "0"}) as server:
        yield server
