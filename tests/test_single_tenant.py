"""Single-tenant mode: the proxy holds the SMS Leads account; clients present its API keys."""

from __future__ import annotations

import base64
import hashlib

import httpx
import pytest
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.settings import Settings, SettingsError
from tests.conftest import Recorder
from tests.processes import running

BALANCE = b"<balance><status>0</status><message>Your balance is:7</message><balance>7</balance></balance>"
TOKEN = "acme-provider-token"
BILLING = "billing-service-key-0001"
REPORTS = "reports-service-key-0002"  # configured by its hash only
ACCOUNT = {"username": "acme", "token": TOKEN,
           "api_keys": f"{BILLING}, sha256:{hashlib.sha256(REPORTS.encode()).hexdigest()}"}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def balance(authorization: str, **account: str) -> tuple[httpx.Response, Recorder]:
    recorder = Recorder(BALANCE)
    app = create_app(Settings(**(account or ACCOUNT)), transport=httpx.MockTransport(recorder))
    with TestClient(app) as client:
        response = client.get("/v1/balance", headers={"Authorization": authorization})
    return response, recorder


@pytest.mark.parametrize("authorization", [
    f"Bearer {BILLING}", f"Bearer {REPORTS}", basic("anyone", BILLING), basic("", REPORTS)])
def test_a_proxy_key_reaches_the_upstream_with_the_held_account(authorization):
    response, recorder = balance(authorization)
    assert (response.status_code, response.json()) == (200, {"credits": 7})
    (sent,) = recorder.requests
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert "<username>acme</username>" in recorder.envelope
    assert BILLING not in sent.content.decode() and BILLING not in str(sent.headers)


@pytest.mark.parametrize("authorization", [
    f"Bearer {TOKEN}", basic("acme", TOKEN), "Bearer not-a-key-of-this-proxy", basic("acme", ""),
    "Basic !!!", "Digest x", ""])
def test_the_provider_token_and_unknown_keys_are_refused(authorization):
    response, recorder = balance(authorization)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith('Bearer realm="smsleads-proxy"')
    assert recorder.requests == []
    assert TOKEN not in response.text


def test_the_token_and_keys_come_from_files(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "keys").write_text(f"# billing\n{BILLING}\n\n# reports, by hash\n"
                                   f"sha256:{hashlib.sha256(REPORTS.encode()).hexdigest()}\n")
    response, recorder = balance(f"Bearer {REPORTS}", username="acme",
                                 token_file=str(tmp_path / "token"),
                                 api_keys_file=str(tmp_path / "keys"))
    assert response.status_code == 200
    assert recorder.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize(("account", "named"), [
    ({"username": "acme", "token": TOKEN}, "--api-keys/SMSLEADS_PROXY_API_KEYS"),
    ({"api_keys": BILLING, "token": TOKEN}, "--username/SMSLEADS_USERNAME"),
    ({"api_keys": BILLING, "username": "acme"}, "--token/SMSLEADS_TOKEN"),
    ({**ACCOUNT, "api_keys": "short"}, "--api-keys/SMSLEADS_PROXY_API_KEYS"),
    ({**ACCOUNT, "api_keys": f"{BILLING},{TOKEN}"}, "must not be the SMS Leads token"),
    ({**ACCOUNT, "token_file": "/etc/hostname"}, "not both"),
])
def test_half_a_setup_stops_the_start_naming_the_setting(account, named):
    with pytest.raises(SettingsError, match=named) as caught:
        create_app(Settings(**account))
    assert TOKEN not in str(caught.value) and BILLING not in str(caught.value)


def test_single_tenant_on_the_sandbox_from_the_environment(tmp_path):
    secret = tmp_path / "smsleads-token"
    secret.write_text("demo-token\n")
    env = {"SMSLEADS_USERNAME": "demo", "SMSLEADS_TOKEN_FILE": str(secret),
           "SMSLEADS_PROXY_API_KEYS": BILLING}
    with running(tmp_path, ["--sandbox"], env=env) as server:
        ok = httpx.get(server.base + "/v1/balance", headers={"Authorization": f"Bearer {BILLING}"})
        provider = httpx.get(server.base + "/v1/balance", auth=("demo", "demo-token"))
        server.stop()
    assert (ok.status_code, ok.json()) == (200, {"credits": 1000})
    assert provider.status_code == 401
    log = server.stderr.read_text("utf-8")
    assert "demo-token" not in log and BILLING not in log
