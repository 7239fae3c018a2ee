"""Accounts of the simulated upstream, and who a request speaks for.

    >>> Account("acme", "acme-token", 500)
    Account(username='acme', token='acme-token', credits=500, ...)

A subscriber (created by ``addSub``, document 2.5.1) has a ``parent`` and, by default, no
token; give one a token through ``Sandbox(accounts=...)`` to let it call the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from proxy.sandbox.wire import Rejected, missing

DEMO_USERNAME = "demo"
DEMO_TOKEN = "demo-token"
DEMO_CREDITS = 1000
DEMO_SENDER = "0500000000"  # pre-verified numeric sender id of the demo account


@dataclass(slots=True)
class Account:
    username: str
    token: str | None
    credits: int
    password: str = ""
    name: str = ""
    source: str = ""
    parent: str | None = None
    token_expired: bool = False
    user_id: int = 0
    # Numeric sender ids verified with verify_phone, as national numbers (no leading 0).
    verified: set[str] = field(default_factory=set)


def demo_account() -> Account:
    return Account(DEMO_USERNAME, DEMO_TOKEN, DEMO_CREDITS, name="Demo", source=DEMO_SENDER,
                   verified={DEMO_SENDER[1:]})


def dump_account(account: Account) -> dict[str, Any]:
    # Not dataclasses.asdict(): it deep-copies every field, a third of a send's time when
    # the store or the console takes the changed records.
    record = {field.name: getattr(account, field.name) for field in fields(Account)}
    record["verified"] = sorted(account.verified)
    return record


def load_account(record: Mapping[str, Any]) -> Account:
    return Account(**{**record, "verified": set(record.get("verified", ()))})


def authenticate(by_token: Mapping[str, Account], authorization: str | None,
                 username: str | None) -> Account:
    """The account a request speaks for (docs/upstream-protocol.md#authentication): the token
    decides, the username must agree with it."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Rejected(504)
    account = by_token.get(token)
    if account is None:
        raise Rejected(3)
    if account.token_expired:
        raise Rejected(10)
    if username is None:
        raise missing("username")
    if username != account.username:
        raise Rejected(11)
    return account
