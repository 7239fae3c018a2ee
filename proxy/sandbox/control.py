"""What a developer makes happen in the sandbox, playing the recipients or the network: a
reply, an opt-out, a delivery report now, an account back to its start. The :class:`Sandbox`
methods of the same names call these under its lock; the console's HTTP calls call those.

    >>> reply(state, now, "demo", "+972501234567", "Yes please")
    Incoming(id=3, owner='demo', source='501234567', destination='500000000', ...)

Refusals are :class:`ControlError`\\ s whose message is written for the developer.
"""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter

from proxy.convert import ConversionError, mobile_to_xml, phone_to_xml
from proxy.pricing import MAX_MESSAGE
from proxy.sandbox.accounts import Account
from proxy.sandbox.phones import mobile, national
from proxy.sandbox.records import Campaign, Delivery, Incoming, Phase
from proxy.sandbox.state import State
from proxy.sandbox.texts import OPT_OUT_WORDS, OUTCOMES
from proxy.sandbox.views import delivery_state, phone, time


class ControlError(Exception):
    """A control action the sandbox refuses."""


class NotFound(ControlError, LookupError):
    """No such account, campaign or delivery."""


class Invalid(ControlError, ValueError):
    """A bad value; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class Conflict(ControlError):
    """The action does not fit the sandbox's state: a delivery already reported, a clock
    that is the system's, an account with nothing to go back to."""


def _mobile(text: str, field: str) -> str:
    """The national number of a mobile written in any of the API's forms."""
    number = mobile(text)
    if number is None:
        try:
            number = mobile(mobile_to_xml(text))
        except ConversionError as exc:
            raise Invalid(field, str(exc)) from exc
    return number or ""


def _text(text: str, field: str = "text") -> str:
    if not text.strip():
        raise Invalid(field, "must not be empty")
    if len(text) > MAX_MESSAGE:
        raise Invalid(field, f"must be at most {MAX_MESSAGE} characters")
    return text


def _account(state: State, username: str) -> Account:
    account = state.accounts.get(username)
    if account is None:
        raise NotFound(f"the sandbox has no account {username!r}")
    return account


def _reply_number(state: State, account: Account, number: str) -> str:
    """Where the phone's message goes: the reply-able number of the latest campaign it got
    from the account (response=1), else the account's own number."""
    latest = max((c for c in state.campaigns.values() if c.owner == account.username
                  and any(d.phone == number for d in c.deliveries)),
                 key=attrgetter("id"), default=None)
    if latest is not None and latest.reply_to is not None:
        return latest.reply_to
    if not account.source.isdigit():
        raise Invalid("to", f"the account {account.username} has no number of its own: "
                            "say which number the phone writes to")
    return national(account.source)


def reply(state: State, now: datetime, username: str, sender: str, text: str,
          to: str | None = None) -> Incoming:
    """The phone ``sender`` sends ``text`` to the account; an opt-out word after a send with
    add_unsubscribe blacklists it (state.py, ``receive``)."""
    account = _account(state, username)
    number = _mobile(sender, "phone")
    if to is None:
        destination = _reply_number(state, account, number)
    else:
        try:
            destination = national(phone_to_xml(to))
        except ConversionError as exc:
            raise Invalid("to", str(exc)) from exc
    return state.receive(username, number, destination, _text(text), now)


def opt_out(state: State, now: datetime, username: str, sender: str,
            text: str = "STOP") -> Incoming:
    """The phone ``sender`` opts out: ``text`` arrives, and the number is blacklisted whatever
    it was sent (a reply "STOP" blacklists only after a send with add_unsubscribe)."""
    if text.strip().upper() not in OPT_OUT_WORDS:
        raise Invalid("text", f"an opt-out is one of {', '.join(sorted(OPT_OUT_WORDS))}")
    message = reply(state, now, username, sender, text)
    state.block(username, message.source, now)
    return message


def _delivery(state: State, campaign_id: int, sender: str) -> tuple[Campaign, Delivery]:
    campaign = state.campaigns.get(campaign_id)
    if campaign is None:
        raise NotFound(f"the sandbox has no campaign {campaign_id}")
    number = _mobile(sender, "phone")
    for delivery in campaign.deliveries:
        if delivery.phone == number:
            return campaign, delivery
    raise NotFound(f"campaign {campaign_id} was not sent to {phone(number)}")


def report(state: State, now: datetime, campaign_id: int, sender: str,
           outcome: str) -> Delivery:
    """The report of a pending delivery arrives now: ``delivered``, ``failed`` or
    ``expired``; the campaign's other recipients keep theirs for later."""
    if outcome not in OUTCOMES:
        raise Invalid("outcome", f"must be one of {', '.join(OUTCOMES)}")
    campaign, delivery = _delivery(state, campaign_id, sender)
    if campaign.phase is Phase.CANCELLED:
        raise Conflict(f"campaign {campaign_id} was cancelled: nothing was sent")
    if campaign.phase is Phase.SCHEDULED:
        raise Conflict(f"campaign {campaign_id} is scheduled for {time(campaign.send_at)}: "
                       "nothing was sent yet")
    if delivery.reported_at is not None:
        raise Conflict(f"the delivery to {phone(delivery.phone)} already has its report: "
                       f"{delivery_state(campaign.phase, delivery.status)} at "
                       f"{time(delivery.reported_at)}")
    state.settle(campaign, delivery, OUTCOMES[outcome], now)
    return delivery


def reset(state: State, now: datetime, username: str, start: Account | None) -> Account:
    """The account as the sandbox started it (``start``)."""
    account = _account(state, username)
    if account.parent is not None:
        raise Conflict(f"{username} is a subscriber of {account.parent}: "
                       f"resetting {account.parent} removes it")
    if start is None:
        raise Conflict(f"the sandbox did not start with {username} (it came from its state "
                       "file): there is nothing to reset it to")
    state.reset(account, start, now)
    return account
