"""What the console shows, as JSON: the sandbox's records seen from the phones' side.

    >>> delivery_state("reported", 2)
    'expired'

Views are made from the records the store writes (records.py's ``dump_*``), so a snapshot
and a change event describe a record the same way. Phones are E.164 and delivery states
carry the names the proxy's API gives them (``proxy/mapping.yaml``, ``dlr_state``), times
are RFC 3339 in Israel time: what a developer sees here matches what the API answers.
Everything is bounded: the latest campaigns, messages and blacklist entries only.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import yaml

from proxy.convert import CONVERTERS
from proxy.sandbox.accounts import dump_account
from proxy.sandbox.clock import ISRAEL
from proxy.sandbox.records import dump_campaign, dump_incoming
from proxy.sandbox.state import State
from proxy.sandbox.store import Change
from proxy.sandbox.texts import DLR_TEXTS

CAMPAIGNS = 100   # the latest campaigns in a snapshot
DELIVERIES = 100  # recipients shown per campaign (the rest are counted)
INCOMING = 300    # the latest incoming messages in a snapshot
BLACKLIST = 300   # the latest blacklist entries in a snapshot
PANEL_ROWS = 100  # rows shown of an extra panel

View = dict[str, Any]


def _api_names(name: str) -> dict[str, str]:
    """Upstream code -> the name the API gives it (mapping.yaml's ``enums``)."""
    table = yaml.safe_load(resources.files("proxy").joinpath("mapping.yaml").read_text("utf-8"))
    return {str(code): key for key, codes in table["enums"][name].items()
            for code in (codes if isinstance(codes, list) else [codes])}


_DLR_STATE = _api_names("dlr_state")
_UNSUBSCRIBE = _api_names("unsubscribe")
_PHONE = CONVERTERS["phone"].from_xml


def phone(number: str) -> str:
    """A national number as the API writes it (+9725...); any other text as it is."""
    return str(_PHONE(number))


def time(moment: datetime | str | None) -> str | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(ISRAEL).isoformat(timespec="seconds")


def delivery_state(phase: str, status: int | None) -> str:
    """scheduled, cancelled, pending (sent, no report yet), or the report's state."""
    if phase in ("scheduled", "cancelled"):
        return phase
    return "pending" if status is None else _DLR_STATE.get(str(status), "unknown")


def account(record: dict[str, Any]) -> View:
    return {"username": record["username"], "name": record["name"] or None,
            "credits": record["credits"], "sender": record["source"] or None,
            "parent": record["parent"]}


def delivery(row: list[Any], phase: str, reply_to: str | None) -> View:
    number, external_id, text, cost, status, reported_at, *sender = row
    he_text, en_text = DLR_TEXTS.get(status, (None, None)) if status is not None else (None, None)
    # With response=1 the phone sees the random reply-able number, not the sender given
    # (docs/upstream-protocol.md#reply-numbers).
    shown_sender = phone(reply_to) if reply_to else (sender[0] if sender else None)
    return {"phone": phone(number), "external_id": external_id or None, "text": text,
            "parts": cost, "sender": shown_sender or None,
            "state": delivery_state(phase, status), "status_code": status,
            "description": en_text, "description_he": he_text, "reported_at": time(reported_at)}


def campaign(record: dict[str, Any]) -> View:
    phase, rows = record["phase"], record["deliveries"]
    deliveries = [delivery(row, phase, record["reply_to"]) for row in rows[:DELIVERIES]]
    senders = list(dict.fromkeys(d["sender"] for d in deliveries if d["sender"]))
    return {
        "id": str(record["id"]), "account": record["owner"], "state": phase,
        "send_at": time(record["send_at"]),
        "text": deliveries[0]["text"] if deliveries else "",
        "texts": len({row[2] for row in rows}),
        "senders": senders, "recipients": len(rows),
        "parts": max((row[3] for row in rows), default=0),
        "credits": sum(row[3] for row in rows),
        "reply_to": phone(record["reply_to"]) if record["reply_to"] else None,
        "unsubscribe": _UNSUBSCRIBE.get(str(record["unsubscribe"])),
        "deliveries": deliveries, "more_recipients": max(0, len(rows) - DELIVERIES),
    }


def incoming(record: dict[str, Any]) -> View:
    return {"id": str(record["id"]), "account": record["owner"],
            "phone": phone(record["source"]), "to": phone(record["destination"]),
            "text": record["message"], "received_at": time(record["at"])}


def blacklisted(record: dict[str, Any]) -> View:
    return {"account": record["owner"], "phone": phone(record["number"]),
            "added_at": time(record["at"])}


VIEWS: dict[str, Callable[[dict[str, Any]], View]] = {
    "account": account, "campaign": campaign, "incoming": incoming, "blacklist": blacklisted,
}


@dataclass(frozen=True, slots=True)
class Panel:
    """An extra section of the console, filled by another part of the program: the place
    where the webhooks of issue 13 will list their deliveries (subscription, event, status
    code). ``rows()`` gives the rows now, newest first, each mapping some of ``columns`` to
    a text or a number; the console shows them as a table. Register it with
    ``sandbox.add_panel(panel)``, and call ``sandbox.panel_changed(panel.key)`` whenever its
    rows change, to update the consoles watching."""

    key: str
    title: str
    columns: tuple[str, ...]
    rows: Callable[[], list[dict[str, str | int | None]]]


def panel(extra: Panel) -> View:
    return {"key": extra.key, "title": extra.title, "columns": list(extra.columns),
            "rows": extra.rows()[:PANEL_ROWS]}


def _key(kind: str, key: str) -> str:
    """The key a client files a view under: the store's, with blacklist numbers in E.164."""
    if kind == "blacklist":
        owner, _, number = key.partition("\t")
        return f"{owner} {phone(number)}"
    return key


def changes(records: Iterable[Change]) -> list[View]:
    """The store's changed records as ``{kind, key, value}``; value None: deleted."""
    return [{"kind": kind, "key": _key(kind, key),
             "value": None if record is None else VIEWS[kind](record)}
            for kind, key, record in records if kind in VIEWS]


def event(now: datetime, body: View) -> str:
    return event_of({"now": time(now), **body})


def event_of(view: View) -> str:
    """One line of JSON (server-sent events cut data at line breaks; json.dumps has none)."""
    return json.dumps(view, ensure_ascii=False, separators=(",", ":"))


def snapshot(state: State) -> View:
    """The latest of everything, newest first."""
    campaigns = heapq.nlargest(CAMPAIGNS, state.campaigns)
    messages = heapq.nlargest(INCOMING, (message for messages in state.incoming.values()
                                         for message in messages[-INCOMING:]),
                              key=lambda message: (message.at, message.id))
    entries = heapq.nlargest(BLACKLIST, ((at, owner, number)
                                         for owner, numbers in state.blacklists.items()
                                         for number, at in numbers.items()))
    return {
        "accounts": [account(dump_account(a)) for a in state.accounts.values()],
        "campaigns": [campaign(dump_campaign(state.campaigns[i])) for i in campaigns],
        "incoming": [incoming(dump_incoming(message)) for message in messages],
        "blacklist": [blacklisted({"owner": owner, "number": number, "at": at})
                      for at, owner, number in entries],
    }
