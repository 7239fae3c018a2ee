"""Local computations: operations of the table answered by the proxy itself, from the envelope
the request makes, which is never sent (mapping.yaml, ``compute:``). Registered by name, built
from the table's argument like the converters with one:

    computation = COMPUTATIONS["price"](argument)   # a ValueError names a bad argument
    answer = await computation.run(envelope, ask)    # ask(operation_id, path) -> its answer

A computation learns what only the upstream knows by asking other operations of the table
(read-only ones, named in its argument), each one upstream call through the usual pipeline.

``price`` answers what a send would cost: per text its encoding, characters and parts
(proxy/pricing.py, the rules the sandbox charges by), the credits of the whole send, the
account's credits now and whether they cover it. Its ``spend`` counts the same without asking
the credits: what the spend guard (proxy/guard.py) charges a send before it goes out.

``transfer`` reads the credits a request moves out of the account (to a subscriber, who spends
them beyond the proxy's sight): what the guard charges it, as it charges a send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from proxy.convert import CONVERTERS, ConversionError
from proxy.pricing import UNSUBSCRIBE, compose, count, has_fields
from proxy.types import JSON

Ask = Callable[[str, Mapping[str, str]], Awaitable[JSON]]

UNKNOWN_FIELDS = ("The dynamic fields of contact-list members cannot be read back from SMS "
                  "Leads: their texts are counted with the fields empty, so `credits` is a "
                  "minimum.")
UNKNOWN_OPT_OUT = ("SMS Leads does not document the opt-out line it appends: it is counted as "
                   "{length} characters (the sandbox's line).")


@dataclass(frozen=True, slots=True)
class Spend:
    """What sending an envelope costs: its destinations (each counted once per message) and
    credits; ``exact`` False when the credits are a minimum (unknown dynamic fields)."""

    destinations: int
    credits: int
    exact: bool


@dataclass(frozen=True, slots=True)
class Computation:
    name: str
    run: Callable[[etree._Element, Ask], Awaitable[JSON]]
    asks: tuple[str, ...]  # the operations it calls, checked against the table at load
    # What sending the envelope would spend, for a computation that prices sends (`spends:`).
    spend: Callable[[etree._Element, Ask], Awaitable[Spend]] | None = None


# ── price ───────────────────────────────────────────────────────────────────────────────────

PRICE_PATHS = ("messages", "text", "destinations", "phone")  # ElementPaths it must be given
PRICE_OPTIONAL = ("tag", "personalize", "unsubscribe", "list")
PRICE_ASKS = ("credits", "members")  # operationIds: the account's credits, a list's members


@dataclass(slots=True)
class _Text:
    """Destinations of one message that get the same text."""

    message: int
    text: str
    exact: bool
    destinations: int = 0

    @property
    def credits(self) -> int:
        return count(self.text).parts * self.destinations


@dataclass(slots=True)
class _Tally:
    texts: dict[tuple[int, str, bool], _Text] = field(default_factory=dict)
    caveats: list[str] = field(default_factory=list)

    def add(self, message: int, text: str, exact: bool) -> None:
        key = (message, text, exact)
        self.texts.setdefault(key, _Text(message, text, exact)).destinations += 1

    def note(self, caveat: str) -> None:
        if caveat not in self.caveats:
            self.caveats.append(caveat)

    def spend(self) -> Spend:
        return Spend(sum(entry.destinations for entry in self.texts.values()),
                     sum(entry.credits for entry in self.texts.values()),
                     all(entry.exact for entry in self.texts.values()))


def _number(text: str) -> str:
    """One form of a phone, so that a member and a recipient of the same number meet."""
    to_xml = CONVERTERS["phone"].to_xml
    try:
        return to_xml(text) if to_xml is not None else text
    except ConversionError:
        return text


def price(argument: Any) -> Computation:
    if not isinstance(argument, dict):
        raise ValueError("needs a mapping of ElementPaths and operations")
    missing = [key for key in (*PRICE_PATHS, *PRICE_ASKS) if key not in argument]
    unknown = set(argument) - {*PRICE_PATHS, *PRICE_OPTIONAL, *PRICE_ASKS}
    if missing or unknown:
        raise ValueError(f"missing {missing}" if missing else f"unknown keys {sorted(unknown)}")
    paths = {key: str(argument[key]) for key in (*PRICE_PATHS, *PRICE_OPTIONAL)
             if key in argument}
    credits_op, members_op = str(argument["credits"]), str(argument["members"])
    flag = CONVERTERS["flag"].from_xml

    async def members(ask: Ask, list_id: str, known: dict[str, list[str]]) -> list[str]:
        if list_id not in known:  # a list named twice is asked once
            known[list_id] = await _members(ask, members_op, list_id)
        return known[list_id]

    async def tally(envelope: etree._Element, ask: Ask) -> _Tally:
        tally, known = _Tally(), dict[str, list[str]]()
        raw = envelope.findtext(paths["unsubscribe"]) if "unsubscribe" in paths else None
        unsubscribe = int(raw) if raw and raw.isdigit() else 0
        if unsubscribe in UNSUBSCRIBE:
            tally.note(UNKNOWN_OPT_OUT.format(length=len(UNSUBSCRIBE[unsubscribe])))
        for index, message in enumerate(envelope.findall(paths["messages"])):
            await _price_message(index, message, paths, unsubscribe, tally,
                                 lambda list_id: members(ask, list_id, known), flag)
        return tally

    async def run(envelope: etree._Element, ask: Ask) -> JSON:
        counted = await tally(envelope, ask)
        available = await ask(credits_op, {})
        return _answer(counted, available.get("credits") if isinstance(available, dict) else None)

    async def spend(envelope: etree._Element, ask: Ask) -> Spend:
        return (await tally(envelope, ask)).spend()

    return Computation("price", run, (credits_op, members_op), spend)


async def _members(ask: Ask, operation: str, list_id: str) -> list[str]:
    """The phones of a contact list's members, as the members operation answers them."""
    answer = await ask(operation, {"id": list_id})
    contacts = answer.get("contacts") if isinstance(answer, dict) else None
    return [str(c["phone"]) for c in contacts if isinstance(c, dict) and "phone" in c] \
        if isinstance(contacts, list) else []


async def _price_message(index: int, message: etree._Element, paths: Mapping[str, str],
                         unsubscribe: int, tally: _Tally,
                         members: Callable[[str], Awaitable[list[str]]],
                         flag: Callable[[str], JSON]) -> None:
    """Every destination of one message once (its first entry), in envelope order, with the
    text it gets: a member's dynamic fields are unknown, a phone has none."""
    text = message.findtext(paths["text"]) or ""
    tag = message.findtext(paths["tag"]) if "tag" in paths else None
    personalize = "personalize" in paths and flag(
        message.findtext(paths["personalize"]) or "") is True
    known = compose(text, tag=tag, personalize=personalize, unsubscribe=unsubscribe)
    fields_matter = personalize and has_fields(text)
    seen: set[str] = set()
    destinations = message.find(paths["destinations"])
    for child in [] if destinations is None else destinations:
        if child.tag == paths.get("list"):
            numbers, exact = await members((child.text or "").strip()), not fields_matter
        elif child.tag == paths["phone"]:
            numbers, exact = [(child.text or "").strip()], True
        else:
            continue
        for number in map(_number, numbers):
            if number not in seen:
                seen.add(number)
                tally.add(index, known, exact)
                if not exact:
                    tally.note(UNKNOWN_FIELDS)


def _answer(tally: _Tally, available: JSON) -> JSON:
    texts: list[JSON] = []
    for entry in tally.texts.values():
        counted = count(entry.text)
        texts.append({"message": entry.message, "text": entry.text,
                      "encoding": counted.encoding, "characters": counted.characters,
                      "parts": counted.parts, "destinations": entry.destinations,
                      "credits": entry.credits, "exact": entry.exact})
    spend = tally.spend()
    answer: dict[str, JSON] = {"credits": spend.credits, "exact": spend.exact, "texts": texts}
    if isinstance(available, int):
        answer.update(available_credits=available, sufficient=spend.credits <= available)
    if tally.caveats:
        answer["caveats"] = list(tally.caveats)
    return answer


# ── transfer ────────────────────────────────────────────────────────────────────────────────


def transfer(argument: Any) -> Computation:
    if not (isinstance(argument, dict) and set(argument) == {"credits"}):
        raise ValueError("needs {credits: <ElementPath>}")
    path = str(argument["credits"])

    async def spend(envelope: etree._Element, ask: Ask) -> Spend:
        # Digits only, as the upstream takes them (validated before); anything else it refuses.
        raw = (envelope.findtext(path) or "").strip()
        return Spend(0, int(raw) if raw.isdigit() else 0, exact=True)

    async def run(envelope: etree._Element, ask: Ask) -> JSON:
        counted = await spend(envelope, ask)
        return {"credits": counted.credits, "exact": counted.exact}

    return Computation("transfer", run, (), spend)


COMPUTATIONS: dict[str, Callable[[Any], Computation]] = {
    "price": price,
    "transfer": transfer,
}
