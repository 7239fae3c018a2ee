from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.clients.prism import Prism, running_prism
from tests.clients.support import BUDGET, ROOT, SPEC, npm_install
from tests.conftest import FIGURES
from tests.processes import Server, running


@pytest.fixture(scope="session")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m proxy --sandbox`` on a free loopback port, for every client scenario of the
    session. Its sandbox reports deliveries at once (SANDBOX_DLR_DELAY, proxy/sandbox/
    __main__.py), so a scenario reads reports right after sending, with no waiting. Each
    credential may spend BUDGET credits a day: more than the demo account holds, so a send
    over the account's credits is still SMS Leads' 402, and a send over the budget is 429."""
    # Its state file is the run's (tests/conftest.py's session_state_home), so the day's
    # budget starts at nothing whatever earlier runs spent.
    with running(tmp_path_factory.mktemp("proxy"), ["--sandbox", "--daily-credits", str(BUDGET)],
                 env={"SANDBOX_DLR_DELAY": "0"}) as server:
        yield server


@pytest.fixture(scope="session")
def prism(proxy: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prism]:
    """Prism validating every request and answer against openapi.yaml, in front of the
    session's proxy (tests/clients/prism.py); started once per session."""
    tools = npm_install(ROOT / "tests" / "tools") / ".bin"
    with running_prism(tools / "prism", SPEC, proxy.base, tmp_path_factory.mktemp("prism")) as server:
        yield server


@pytest.fixture
def validated(prism: Prism, request: pytest.FixtureRequest) -> Iterator[Prism]:
    """Prism, and after the test: none of the requests it saw broke the spec, nor did any
    answer. The count goes to the run's figures."""
    with httpx.Client(auth=("demo", "demo-token"), timeout=30) as probe:
        prism.since_last(probe)
        yield prism
        requests, violations = prism.since_last(probe)
    FIGURES.append(f"prism, {request.node.name}: {requests - 1} requests and answers "
                   f"validated, {len(violations)} violations")
    assert violations == [], "\n".join(violations)
