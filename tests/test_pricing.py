"""proxy/pricing.py, the one set of counting rules, and the sandbox's charge agreeing with it
on every generated send (GSM-7 with extension characters, UCS-2, emoji, 1,005 characters,
dynamic fields filled per contact, the opt-out line, the '<#>' tag)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from proxy.app import create_app
from proxy.pricing import MAX_MESSAGE, compose, count, credits
from proxy.sandbox import Account, FixedClock, Sandbox
from proxy.sandbox import create_app as create_sandbox
from proxy.settings import Settings
from tests.conftest import NOW, UNGUARDED

RICH = Account("rich", "rich-token", 10**9)
HEADERS = {"Authorization": "Bearer rich-token", "X-SMSLeads-Username": "rich"}


@pytest.mark.parametrize(("text", "parts"), [
    ("", 1), ("a" * 160, 1), ("a" * 161, 2), ("a" * 459, 3), ("a" * 460, 4),
    ("{" * 80, 1), ("{" * 81, 2),
    ("a" * 152 + "€" + "a" * 152, 3),  # 306 septets, but an escape pair is never split
    ("ñÑüÜ@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡§¿äöà", 1),   # all GSM-7: 160 fit
    ("é" * 160, 1), ("ê" * 70, 1), ("ê" * 71, 2),            # ê is not GSM-7
    ("ש" * 201, 3), ("ש" * 202, 4), ("ש" * 268, 4), ("ש" * 335, 5),  # NOTES: 201/268/335
    ("😀" * 35, 1), ("😀" * 36, 2),
    ("a" * 66 + "😀" + "a" * 66, 3),  # 134 units, but a surrogate pair is never split
])
def test_parts(text: str, parts: int) -> None:
    assert count(text).parts == parts


def test_a_count_names_the_encoding_characters_and_units():
    assert count("Hi {you}") == count("Hi {you}")
    assert (count("Hi {you}").encoding, count("Hi {you}").characters,
            count("Hi {you}").units) == ("GSM-7", 8, 10)
    assert (count("שלום 😀").encoding, count("שלום 😀").characters,
            count("שלום 😀").units) == ("UCS-2", 6, 7)


def test_compose_trims_tags_fills_and_appends():
    assert compose("  Hi [DYNAMIC_FIELD2]!  ", tag="#", personalize=True,
                   fields=("Dana", "Haifa")) == "<#>Hi Haifa!"
    assert compose("Hi [DYNAMIC_FIELD3]", personalize=True, fields=("a",)) == "Hi "
    assert compose("Hi [DYNAMIC_FIELD1]", fields=("a",)) == "Hi [DYNAMIC_FIELD1]"
    assert compose("Hi", unsubscribe=2).startswith("Hi\n") and compose("Hi", unsubscribe=1) == "Hi"
    assert credits(["a" * 161, "a", "a" * 161]) == 5


# ── The sandbox charges what the rules price ─────────────────────────────────────────────

GSM = "abcXYZ019 .,!?@£$¥èéΔΦΓ_ÄÖÑÜ§¿äöñüà\n"
EXTENSION = "^{}\\[~]|€"
OTHER = "שלוםабвêç😀🎉👍🏽"
PIECES = st.one_of(st.text(st.sampled_from(GSM + EXTENSION + OTHER), max_size=80),
                   st.text(st.sampled_from(GSM), min_size=100, max_size=400),
                   st.sampled_from([f"[DYNAMIC_FIELD{n}]" for n in range(1, 8)]))
TEXTS = st.one_of(
    st.lists(PIECES, max_size=8).map("".join),
    st.lists(st.sampled_from(["Hi [DYNAMIC_FIELD1] ", "[DYNAMIC_FIELD2]", "a" * 60]),
             min_size=1, max_size=6).map("".join),
    st.sampled_from(["a" * MAX_MESSAGE, "ש" * MAX_MESSAGE, "😀" * 502 + "a",
                     "€" * MAX_MESSAGE, "a" * 1004 + "😀"]),
).map(lambda text: text[:MAX_MESSAGE]).filter(lambda text: text.strip() != "")
FIELD = st.one_of(st.text(st.sampled_from(GSM + EXTENSION + OTHER), max_size=20),
                 st.text(st.sampled_from(GSM + EXTENSION), min_size=60, max_size=100),
                 st.sampled_from(["Dana", "דנה", "😀", "€€€"])).map(str.strip)
FIELDS = st.lists(FIELD, max_size=6)
POOL = [f"05{n}1234567" for n in range(6)]  # few numbers: recipients and members overlap


@st.composite
def sends(draw: st.DrawFn) -> dict:
    members = draw(st.dictionaries(st.sampled_from(POOL), FIELDS, max_size=4))
    return {"text": draw(TEXTS), "recipients": draw(st.lists(st.sampled_from(POOL), max_size=4)),
            "members": members, "personalize": draw(st.sampled_from([True, True, False])),
            "tag": draw(st.sampled_from([None, "#", "x"])),
            "unsubscribe": draw(st.sampled_from([None, "link", "reply"]))}


def expected_price(send: dict) -> int:
    """The rules of proxy/pricing.py, applied as the upstream sends: list members first (the
    envelope lists them before the phones), each number once (its first entry), a recipient
    without dynamic fields."""
    destinations: dict[str, list[str]] = {}
    for phone, fields in send["members"].items():
        destinations.setdefault(phone, fields)
    for phone in send["recipients"]:
        destinations.setdefault(phone, [])
    unsubscribe = {None: 0, "link": 3, "reply": 2}[send["unsubscribe"]]
    return credits(compose(send["text"], tag=send["tag"], personalize=send["personalize"],
                           fields=fields, unsubscribe=unsubscribe)
                   for fields in destinations.values())


def request_body(send: dict, list_id: str | None) -> dict:
    body = {"sender": "Shop", "text": send["text"], "personalize": send["personalize"],
            "recipients": [{"phone": phone} for phone in send["recipients"]]}
    if list_id is not None:
        body["contact_list_ids"] = [list_id]
    if not body["recipients"]:
        del body["recipients"]
    body.update({key: send[key] for key in ("tag", "unsubscribe") if send[key] is not None})
    return body


def balance(client: TestClient) -> int:
    return int(client.get("/v1/balance").json()["credits"])


def test_the_sandbox_charges_what_the_rules_price():
    sandbox = Sandbox(clock=FixedClock(NOW), seed=1, accounts=[RICH])
    transport = httpx.ASGITransport(app=create_sandbox(sandbox))
    # 120 sends in a second or two from one credential.
    app = create_app(Settings(upstream_url="http://sandbox.test/api", **UNGUARDED),
                     transport=transport)
    with TestClient(app, headers=HEADERS) as client:

        @settings(max_examples=120, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(sends())
        def charged(send: dict) -> None:
            list_id = None
            if send["members"]:
                created = client.post("/v1/contact-lists", json={"name": "generated", "contacts": [
                    {"phone": phone, "dynamic_fields": fields}
                    for phone, fields in send["members"].items()]})
                assert created.status_code == 201, created.text
                list_id = created.json()["id"]
            if not send["recipients"] and list_id is None:
                return
            before = balance(client)
            sent = client.post("/v1/messages", json=request_body(send, list_id))
            assert sent.status_code == 202, sent.text
            assert before - balance(client) == expected_price(send)

        charged()
