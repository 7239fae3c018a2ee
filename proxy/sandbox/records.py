"""What the simulated upstream remembers, and how each record is written to SQLite (as JSON).

Phone numbers are kept as national numbers (``521234567``); contact-list members also keep
the text they were given, which is what getCL shows (the provider's example mixes both forms:
docs/upstream-protocol.md#getcl).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple


class Phase(StrEnum):
    SCHEDULED = "scheduled"  # waits for its timing; cancel refunds it
    SENT = "sent"            # out; its reports come dlr_delay later
    REPORTED = "reported"    # every destination has its report
    CANCELLED = "cancelled"


@dataclass(slots=True)
class Delivery:
    """One destination of a campaign."""

    phone: str
    external_id: str  # "" when sent without an id
    text: str
    cost: int
    status: int | None = None
    reported_at: datetime | None = None
    sender: str = ""  # the source the message was sent with ("" in files of older sandboxes)


@dataclass(slots=True)
class Campaign:
    id: int
    owner: str
    send_at: datetime
    phase: Phase
    deliveries: list[Delivery]
    reply_to: str | None = None  # the random reply-able sender of a response=1 send
    unsubscribe: int = 0

    @property
    def cost(self) -> int:
        return sum(delivery.cost for delivery in self.deliveries)


@dataclass(slots=True)
class Member:
    given: str  # the phone as written in the request, stripped
    fields: tuple[str, ...]  # df1..df6, "" when absent


@dataclass(slots=True)
class ContactList:
    id: int
    owner: str
    name: str
    members: dict[str, Member] = field(default_factory=dict)  # by national number, in order


@dataclass(frozen=True, slots=True)
class Incoming:
    id: int
    owner: str
    source: str       # national numbers
    destination: str
    message: str
    at: datetime


class Report(NamedTuple):
    """A delivery report as the account's report index holds it, ordered by ``at``."""

    at: datetime
    campaign_id: int
    delivery: Delivery


def _time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def dump_campaign(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.id, "owner": campaign.owner, "send_at": _iso(campaign.send_at),
        "phase": campaign.phase.value, "reply_to": campaign.reply_to,
        "unsubscribe": campaign.unsubscribe,
        "deliveries": [dump_delivery(d) for d in campaign.deliveries],
    }


def dump_delivery(d: Delivery) -> list[Any]:
    return [d.phone, d.external_id, d.text, d.cost, d.status, _iso(d.reported_at), d.sender]


def load_campaign(record: dict[str, Any]) -> Campaign:
    deliveries = [Delivery(phone, external_id, text, cost, status, _time(at), *sender)
                  for phone, external_id, text, cost, status, at, *sender in record["deliveries"]]
    return Campaign(record["id"], record["owner"], datetime.fromisoformat(record["send_at"]),
                    Phase(record["phase"]), deliveries, record["reply_to"], record["unsubscribe"])


def dump_list(contact_list: ContactList) -> dict[str, Any]:
    return {"id": contact_list.id, "owner": contact_list.owner, "name": contact_list.name,
            "members": [[number, m.given, list(m.fields)]
                        for number, m in contact_list.members.items()]}


def load_list(record: dict[str, Any]) -> ContactList:
    members = {number: Member(given, tuple(fields)) for number, given, fields in record["members"]}
    return ContactList(record["id"], record["owner"], record["name"], members)


def dump_incoming(message: Incoming) -> dict[str, Any]:
    return {"id": message.id, "owner": message.owner, "source": message.source,
            "destination": message.destination, "message": message.message,
            "at": message.at.isoformat()}


def load_incoming(record: dict[str, Any]) -> Incoming:
    return Incoming(record["id"], record["owner"], record["source"], record["destination"],
                    record["message"], datetime.fromisoformat(record["at"]))
