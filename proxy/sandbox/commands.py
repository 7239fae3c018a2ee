"""One handler per upstream command, and the dispatch table from root element to handler.

A handler gets the authenticated :class:`Call` and returns a :class:`Reply`, or raises
:class:`~proxy.sandbox.wire.Rejected`. Handlers check everything before they change
anything, so a refused request leaves no trace (a send short of credit sends nothing:
docs/upstream-protocol.md#check-order). Sections cite docs/upstream-protocol.md, whose anchors
are the commands' names (#sms, #bulk, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from lxml import etree

from proxy.pricing import MAX_MESSAGE, UNSUBSCRIBE, compose, count
from proxy.sandbox.accounts import Account
from proxy.sandbox.clock import MINUTE, format_time, parse_time
from proxy.sandbox.phones import landline, local, mobile, national
from proxy.sandbox.records import ContactList, Delivery, Member, Phase, Report
from proxy.sandbox.state import State
from proxy.sandbox.texts import DLR_TEXTS, VERIFICATION_LINE, VERIFY_LANDLINE, VERIFY_MOBILE
from proxy.sandbox.wire import Rejected, missing, node, rows, unknown_error


@dataclass(frozen=True, slots=True)
class Call:
    state: State
    account: Account
    request: etree._Element
    now: datetime


@dataclass(slots=True)
class Reply:
    message: str | None  # None: no <message> element (verify_phone, 2.8)
    body: list[etree._Element] = field(default_factory=list)
    status: int = 0


Handler = Callable[[Call], Reply]

# At most 1,000 delivery reports an answer; the project assumes the same cap for every report
# command, keeping the oldest (docs/upstream-protocol.md#report-size).
MAX_ROWS = 1000
MAX_WINDOW = timedelta(days=7)     # docs/upstream-protocol.md#report-windows: 7 days long, 365 back
MAX_AGE = timedelta(days=365)
# Letters, digits and spaces, which real senders have (docs/upstream-protocol.md#sender-ids).
_SENDER = re.compile(r"[0-9A-Za-z ]{1,11}")
_DIGITS = re.compile(r"[0-9]+")
_NO_FIELDS = ("",) * 6


# ── Reading the request ──────────────────────────────────────────────────────────────────
# Every text is stripped: the provider's own examples pad values with spaces
# (docs/upstream-protocol.md#padded-texts).


def _text(parent: etree._Element, name: str) -> str | None:
    element = parent.find(name)
    return None if element is None else (element.text or "").strip()


def _required(parent: etree._Element, name: str) -> str:
    text = _text(parent, name)
    if text is None:
        raise missing(name)
    return text


def _element(parent: etree._Element, name: str) -> etree._Element:
    element = parent.find(name)
    if element is None:
        raise missing(name)
    return element


def _texts(parent: etree._Element, path: str) -> list[str]:
    return [(element.text or "").strip() for element in parent.iterfind(path)]


# ── Sending (docs/upstream-protocol.md#sms, #bulk) ────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class _Message:
    source: str
    text: str
    tag: str | None
    dynamic: bool
    destinations: etree._Element


@dataclass(frozen=True, slots=True)
class _Options:
    send_at: datetime | None
    unsubscribe: int
    response: bool


def _message(call: Call, element: etree._Element, response: bool) -> _Message:
    source = _required(element, "source")
    destinations = _element(element, "destinations")
    text = _required(element, "message")
    if not 0 < len(text) <= MAX_MESSAGE:
        raise Rejected(989)
    # With response=1 the given sender is replaced by a random reply-able number, so it is not
    # checked (docs/upstream-protocol.md#reply-numbers).
    if not response:
        if not _SENDER.fullmatch(source):
            raise Rejected(9)
        if _DIGITS.fullmatch(source) and national(source) not in call.account.verified:
            # A numeric sender is verified first (docs/upstream-protocol.md#sender-ids).
            raise Rejected(515)
    return _Message(source, text, _text(element, "tag"), _text(element, "add_dynamic") == "1",
                    destinations)


def _options(element: etree._Element, response: bool) -> _Options:
    raw = _text(element, "add_unsubscribe") or "0"
    if not _DIGITS.fullmatch(raw):
        raise Rejected(986)
    # "Remove by link set 3, Remove by return SMS set 2, any other value would be [no]".
    unsubscribe = int(raw) if int(raw) in UNSUBSCRIBE else 0
    send_at = None
    timing = _text(element, "timing")
    if timing:
        send_at = parse_time(timing)
        if send_at is None:
            raise unknown_error("timing is not a date in the format dd/mm/yy hh:mm")
    return _Options(send_at, unsubscribe, response)


def _own_list(call: Call, raw_id: str) -> ContactList | None:
    contact_list = call.state.lists.get(int(raw_id)) if _DIGITS.fullmatch(raw_id) else None
    if contact_list is None or contact_list.owner != call.account.username:
        return None
    return contact_list


def _targets(call: Call, destinations: etree._Element) -> dict[str, tuple[str, tuple[str, ...]]]:
    """National number -> (external id, dynamic fields), in document order: contact lists
    expanded, invalid phones skipped, a number met twice sent once (the first wins)."""
    targets: dict[str, tuple[str, tuple[str, ...]]] = {}
    for child in destinations:
        text = (child.text or "").strip()
        if child.tag == "cl_id":
            contact_list = _own_list(call, text)
            if contact_list is None:
                raise Rejected(988)
            for member_number, member in contact_list.members.items():
                targets.setdefault(member_number, ("", member.fields))
        elif child.tag == "phone" and (number := mobile(text)) is not None:
            targets.setdefault(number, ((child.get("id") or "").strip(), _NO_FIELDS))
    return targets


def _deliveries(call: Call, message: _Message, options: _Options) -> tuple[int, list[Delivery]]:
    """(valid destinations, deliveries): blacklisted numbers are skipped, not charged."""
    targets = _targets(call, message.destinations)
    blocked = call.state.blacklists.get(call.account.username, {})
    costs: dict[str, int] = {}
    deliveries = []
    for number, (external_id, fields) in targets.items():
        if number in blocked:
            continue
        text = compose(message.text, tag=message.tag, personalize=message.dynamic,
                       fields=fields, unsubscribe=options.unsubscribe)
        if text not in costs:
            costs[text] = count(text).parts
        deliveries.append(Delivery(number, external_id, text, costs[text],
                                   sender=message.source))
    return len(targets), deliveries


def _launch(call: Call, valid: int, deliveries: list[Delivery], options: _Options) -> int:
    if not valid:
        raise Rejected(9)
    if not deliveries:
        raise Rejected(8)
    if sum(delivery.cost for delivery in deliveries) > call.account.credits:
        raise Rejected(4)
    campaign = call.state.launch(call.account, deliveries, now=call.now,
                                 send_at=options.send_at, response=options.response,
                                 unsubscribe=options.unsubscribe)
    return campaign.id


def send_sms(call: Call) -> Reply:
    response = _text(call.request, "response") == "1"
    message = _message(call, call.request, response)
    options = _options(call.request, response)
    valid, deliveries = _deliveries(call, message, options)
    campaign_id = _launch(call, valid, deliveries, options)
    return Reply("SMS will be sent", [node("shipment_id", campaign_id)])


def send_bulk(call: Call) -> Reply:
    """One campaign for the whole bulk; an item without valid destinations is skipped,
    the bulk fails only when nothing at all can be sent."""
    items = _element(call.request, "messages").findall("sms")
    if not items:
        raise missing("sms")
    response = _text(call.request, "response") == "1"
    messages = [_message(call, item, response) for item in items]
    options = _options(call.request, response)
    valid, deliveries = 0, []
    for message in messages:
        item_valid, item_deliveries = _deliveries(call, message, options)
        valid += item_valid
        deliveries += item_deliveries
    campaign_id = _launch(call, valid, deliveries, options)
    return Reply("SMS bulk will be sent", [node("shipment_id", campaign_id)])


def cancel(call: Call) -> Reply:
    raw = _required(call.request, "campaign_id")
    campaign = call.state.campaigns.get(int(raw)) if _DIGITS.fullmatch(raw) else None
    if campaign is None or campaign.owner != call.account.username:
        raise Rejected(977)
    if campaign.phase is Phase.CANCELLED:
        raise Rejected(955)
    if campaign.phase is not Phase.SCHEDULED:
        raise Rejected(966)
    call.state.cancel(campaign)
    return Reply("Campaign successfuly cancel")  # sic (docs/upstream-protocol.md#cancel)


def balance(call: Call) -> Reply:
    credits = call.account.credits
    return Reply(f"Your balance is:{credits}", [node("balance", credits)])


# ── Reports (docs/upstream-protocol.md#dlr, #incoming, #blacklist) ────────────────────────────────


def _window(call: Call) -> tuple[datetime, datetime]:
    """[from, to + 1 minute): dates are whole minutes and ``to`` is inclusive."""
    bounds = []
    for name in ("from", "to"):
        moment = parse_time(_required(call.request, name))
        if moment is None:
            raise unknown_error(f"{name} is not a date in the format dd/mm/yy hh:mm")
        bounds.append(moment)
    start, end = bounds
    if start > end:
        raise unknown_error("from is after to")
    if end - start > MAX_WINDOW:
        raise unknown_error("the range from-to is longer than 1 week")
    if start < call.now.replace(second=0, microsecond=0) - MAX_AGE:
        raise unknown_error("from is more than 1 year back")
    return start, end + MINUTE


def _dlr_rows(reports: list[Report]) -> etree._Element:
    def row(report: Report) -> list[tuple[str, str | int]]:
        status = report.delivery.status or 0
        he_message, en_message = DLR_TEXTS[status]
        return [("external_id", report.delivery.external_id), ("status", status),
                ("he_message", he_message), ("en_message", en_message),
                ("date", format_time(report.at)), ("shipment_id", report.campaign_id)]

    return rows("transactions", "transaction", (row(report) for report in reports[:MAX_ROWS]))


def dlr(call: Call) -> Reply:
    wanted = {text for text in _texts(_element(call.request, "transactions"), "external_id")
              if text}
    start, end = _window(call)
    found = [report for report in call.state.reports_between(call.account.username, start, end)
             if report.delivery.external_id in wanted]
    return Reply("", [_dlr_rows(found)])


def dlr_by_date(call: Call) -> Reply:
    # dlrByDate's <transactions> holds the text "null", whatever it holds
    # (docs/upstream-protocol.md#dlrbydate).
    _element(call.request, "transactions")
    start, end = _window(call)
    return Reply("", [_dlr_rows(call.state.reports_between(call.account.username, start, end))])


def incoming(call: Call) -> Reply:
    start, end = _window(call)
    messages = call.state.incoming_between(call.account.username, start, end)[:MAX_ROWS]
    return Reply("", [rows("transactions", "transaction", (
        [("source", local(m.source)), ("destination", local(m.destination)),
         ("message", m.message), ("date", format_time(m.at))] for m in messages))])


def blacklist(call: Call) -> Reply:
    start, end = _window(call)
    entries = call.state.blacklist_between(call.account.username, start, end)[:MAX_ROWS]
    # 2.4.1 writes these numbers 5******** (no leading 0), unlike incoming's 05********.
    return Reply("", [rows("transactions", "transaction", (
        [("phone", number), ("date", format_time(at))] for number, at in entries))])


def remove_from_blacklist(call: Call) -> Reply:
    given = {mobile(text) or text for text in _texts(call.request, "phones/phone")}
    numbers = [number for number in given if mobile(number)]
    if not numbers or not _text(call.request, "reason"):
        raise Rejected(933)
    removed = sum(call.state.unblock(call.account.username, number) for number in numbers)
    absent = len(given) - removed
    # 944 when some were not on the list, with the provider's wording
    # (docs/upstream-protocol.md#rmnumbl).
    return Reply(f"{removed} phone numbers Successfully deleted , "
                 f"{absent} Phone numbers not exist in blacklist", status=944 if absent else 0)


# ── Subscribers (docs/upstream-protocol.md#addsub, #getblancesubs, #updateamountsub) ──────────────


def _parent(call: Call) -> Account:
    if call.account.parent is not None:
        raise Rejected(511)  # a subscriber may not manage subscribers
    return call.account


def _amount(text: str, parent: Account) -> int:
    if not _DIGITS.fullmatch(text):
        raise Rejected(991)
    if int(text) > parent.credits:
        raise Rejected(990)
    return int(text)


def add_subscriber(call: Call) -> Reply:
    parent = _parent(call)
    details = _element(call.request, "userDetails")
    name, username, password, source, raw_amount = (
        _required(details, field) for field in ("name", "username", "password", "source", "amount"))
    checks = ((2 <= len(name) <= 50, 996), (4 <= len(username) <= 20, 995),
              (username not in call.state.accounts, 994), (6 <= len(password) <= 20, 993),
              (1 <= len(source) <= 11, 992))
    for passed, code in checks:
        if not passed:
            raise Rejected(code)
    amount = _amount(raw_amount, parent)
    parent.credits -= amount
    call.state.changed(parent)
    call.state.add_account(Account(username, None, amount, password=password, name=name,
                                   source=source, parent=parent.username))
    return Reply("The user was created successfully")


def update_subscriber_amount(call: Call) -> Reply:
    """The amount moves from the parent's wallet to the subscriber's."""
    parent = _parent(call)
    details = _element(call.request, "userDetails")
    username, password, raw_amount = (
        _required(details, field) for field in ("username", "password", "amount"))
    subscriber = call.state.accounts.get(username)
    if subscriber is None or subscriber.parent != parent.username or (
            subscriber.password != password):
        raise Rejected(503)
    amount = _amount(raw_amount, parent)
    parent.credits -= amount
    subscriber.credits += amount
    call.state.changed(parent)
    call.state.changed(subscriber)
    return Reply("Wallet successfully updated")


def subscriber_balances(call: Call) -> Reply:
    subscribers = call.state.subscribers_of(_parent(call).username)
    return Reply("", [rows("balances", "balance", (
        [("amount", sub.credits), ("sms_user_id", sub.user_id), ("name", sub.name)]
        for sub in subscribers))])


# ── Contact lists (docs/upstream-protocol.md#newcl ... #rmnumcl) ──────────────────────────────────


def _bad_phone(given: str) -> str:
    return (f"The phone {given} is too long or too short or contain characters "
            "and therefore not added")


def _no_list(raw_id: str, action: str) -> str:
    return f"contact list id: {raw_id} does not exist and therefore not {action}"


def _add_members(contact_list: ContactList, destinations: etree._Element | None,
                 errors: list[str]) -> None:
    """A number already on the list keeps its first entry."""
    for destination in [] if destinations is None else destinations.iterfind("destination"):
        given = _text(destination, "phone") or ""
        number = mobile(given)
        if number is None:
            errors.append(_bad_phone(given))
            continue
        fields = tuple(_text(destination, f"df{n}") or "" for n in range(1, 7))
        contact_list.members.setdefault(number, Member(given, fields))


def _errors(errors: list[str]) -> etree._Element:
    return node("errors", None, (node("error", error) for error in errors))


def new_contact_lists(call: Call) -> Reply:
    specs = call.request.findall("cl")
    if not specs:
        raise missing("cl")
    names = [_required(spec, "name") for spec in specs]
    if not all(names):
        raise missing("name")
    errors: list[str] = []
    ids = []
    for spec, name in zip(specs, names, strict=True):
        contact_list = call.state.new_list(call.account.username, name)
        _add_members(contact_list, spec.find("destinations"), errors)
        ids.append(contact_list.id)
    return Reply("conact list successfully created",  # sic (docs/upstream-protocol.md#newcl)
                 [_errors(errors), node("identifiers", None, (node("identifier", i) for i in ids))])


def remove_contact_lists(call: Call) -> Reply:
    """Status 0 even when no id existed: the upstream reports them under <errors>
    (docs/upstream-protocol.md#partial-successes)."""
    errors = []
    for raw_id in _texts(_element(call.request, "cl"), "id"):
        contact_list = _own_list(call, raw_id)
        if contact_list is None:
            errors.append(_no_list(raw_id, "removed"))
        else:
            call.state.remove_list(contact_list)
    return Reply("contact list successfully removed", [_errors(errors)])


def _list_specs(call: Call) -> list[tuple[str, etree._Element]]:
    specs = call.request.findall("cl")
    if not specs:
        raise missing("cl")
    return [(_required(spec, "id"), spec) for spec in specs]


def add_contacts(call: Call) -> Reply:
    errors: list[str] = []
    for raw_id, spec in _list_specs(call):
        contact_list = _own_list(call, raw_id)
        if contact_list is None:
            errors.append(_no_list(raw_id, "added"))
            continue
        _add_members(contact_list, spec.find("destinations"), errors)
        call.state.list_changed(contact_list)
    return Reply("Successfully added phone numbers", [_errors(errors)])


def remove_contacts(call: Call) -> Reply:
    errors = []
    for raw_id, spec in _list_specs(call):
        contact_list = _own_list(call, raw_id)
        if contact_list is None:
            errors.append(_no_list(raw_id, "removed"))
            continue
        for given in _texts(spec, "destinations/phone"):
            number = mobile(given)
            if number is None or contact_list.members.pop(number, None) is None:
                errors.append(f"phone {given} does not exist in contact list id: {raw_id} "
                              "and therefore not removed")
        call.state.list_changed(contact_list)
    return Reply("Successfully deleted phone numbers", [_errors(errors)])


def _members(contact_list: ContactList) -> list[str]:
    """The phones of a list's rows: an empty list still has one row, with an empty phone."""
    return [member.given for member in contact_list.members.values()] or [""]


def contact_lists(call: Call) -> Reply:
    return Reply("", [rows("contact_lists", "contact_list", (
        [("cl_id", cl.id), ("phone", phone), ("name", cl.name)]
        for cl in call.state.lists_of(call.account.username) for phone in _members(cl)))])


def contact_list_by_id(call: Call) -> Reply:
    contact_list = _own_list(call, _required(_element(call.request, "cl"), "id"))
    if contact_list is None:
        raise Rejected(988)
    return Reply("", [rows("contact_lists", "contact_list", (
        [("phone", phone), ("name", contact_list.name)] for phone in _members(contact_list)))])


# ── Sender ids (docs/upstream-protocol.md#verify_phone) ───────────────────────────────────────────


def verify_phone(call: Call) -> Reply:
    """The sandbox completes every verification at once: the number becomes an allowed
    numeric sender without the link or the call."""
    lines = []
    for given in _texts(call.request, "phone"):
        if (number := mobile(given)) is not None:
            lines.append(VERIFY_MOBILE.format(phone=given))
        elif (number := landline(given)) is not None:
            lines.append(VERIFY_LANDLINE.format(phone=given, line=VERIFICATION_LINE))
        else:
            continue
        call.account.verified.add(number)
    if not lines:
        raise Rejected(510)
    call.state.changed(call.account)
    return Reply(None, [node("verify_message", "\n".join(lines))])


COMMANDS: dict[str, Handler] = {
    "sms": send_sms,
    "bulk": send_bulk,
    "cancel": cancel,
    "balance": balance,
    "dlr": dlr,
    "dlrByDate": dlr_by_date,
    "incoming": incoming,
    "blacklist": blacklist,
    "rmNumBL": remove_from_blacklist,
    "addSub": add_subscriber,
    "updateAmountSub": update_subscriber_amount,
    "getBlanceSubs": subscriber_balances,  # sic (docs/upstream-protocol.md#getblancesubs)
    "newCL": new_contact_lists,
    "removeCL": remove_contact_lists,
    "addNumCL": add_contacts,
    "rmNumCL": remove_contacts,
    "getCL": contact_lists,
    "getCLbyID": contact_list_by_id,
    "verify_phone": verify_phone,
}
