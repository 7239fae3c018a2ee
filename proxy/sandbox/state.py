"""The simulated upstream's memory, and the passing of time over it.

Campaigns move ``scheduled -> sent -> reported`` (or ``scheduled -> cancelled``) when the
clock passes their due times, kept in one heap; ``process_due(now)`` runs whatever fell
due, in time order, so reports and replies carry the moment they were due, not the moment
someone asked. Every change also marks its record for the SQLite store, if there is one,
and for the ``observer`` (the console's feed), if there is one: both get the changed records
at ``flush()``.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from dataclasses import fields, replace
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

from proxy.sandbox.accounts import DEMO_USERNAME, Account, demo_account, dump_account, load_account
from proxy.sandbox.records import (
    Campaign,
    ContactList,
    Delivery,
    Incoming,
    Phase,
    Report,
    dump_campaign,
    dump_incoming,
    dump_list,
    load_campaign,
    load_incoming,
    load_list,
)
from proxy.sandbox.store import Change, Rows, Store
from proxy.sandbox.texts import DELIVERED, FAILURES, OPT_OUT_WORDS, REPLIES, SEEDED_INCOMING

_AT = attrgetter("at")
# The demo account starts with something to see in its blacklist window
# (docs/upstream-protocol.md#blacklist): national number, how long ago it was added.
_SEEDED_BLACKLIST = (("529999999", timedelta(days=2)), ("528888888", timedelta(days=5)))


class State:
    def __init__(self, *, seed: int, dlr_delay: timedelta, failure_rate: float,
                 now: datetime, accounts: Iterable[Account] = (), store: Store | None = None
                 ) -> None:
        self.dlr_delay, self.failure_rate, self.store = dlr_delay, failure_rate, store
        self.accounts: dict[str, Account] = {}
        self.by_token: dict[str, Account] = {}
        self.campaigns: dict[int, Campaign] = {}
        self.lists: dict[int, ContactList] = {}
        self.blacklists: dict[str, dict[str, datetime]] = {}  # owner -> number -> added at
        self.incoming: dict[str, list[Incoming]] = {}         # owner -> by date
        self.reports: dict[str, list[Report]] = {}            # owner -> by date
        self.opt_outable: dict[str, set[str]] = {}  # numbers sent with add_unsubscribe
        self.ids: dict[str, int] = {}
        self._due: list[tuple[datetime, int]] = []
        self._dirty: dict[tuple[str, str], Callable[[], Any]] = {}
        self.observer: Callable[[list[Change]], None] | None = None
        rows = store.load() if store is not None else {}
        if rows:
            self._restore(rows)
        else:
            self._seed(seed, now)
        for account in accounts:
            if account.username not in self.accounts:
                self.add_account(replace(account, verified=set(account.verified)))
        self.flush()

    @property
    def seed(self) -> int:
        return self.ids["seed"]

    # ── Start ──────────────────────────────────────────────────────────────────────────────

    def _seed(self, seed: int, now: datetime) -> None:
        rng = random.Random(seed)
        # Id ranges look like the upstream's (docs/upstream-protocol.md#sms, #newcl).
        self.ids = {"seed": seed, "campaign": rng.randrange(800_000_000, 900_000_000),
                    "list": rng.randrange(17_000, 22_000), "user": rng.randrange(1_000, 10_000),
                    "incoming": 0}
        self._touch("meta", "ids", lambda: self.ids)
        self._seed_demo(self.add_account(demo_account()), now)

    def _seed_demo(self, demo: Account, now: datetime) -> None:
        """What the demo account starts with: two blacklisted numbers, two incoming messages."""
        for number, age in _SEEDED_BLACKLIST:
            self.block(demo.username, number, now - age)
        for index, (hours, text) in enumerate(zip((3, 20), SEEDED_INCOMING, strict=True)):
            sender = f"5{20_000_000 + int(self.draw('seeded-incoming', index) * 70_000_000)}"
            self.receive(demo.username, sender, demo.source[1:], text, now - timedelta(hours=hours))

    def _restore(self, rows: Rows) -> None:
        self.ids = rows["meta"]["ids"]
        for record in rows.get("account", {}).values():
            self._index_account(load_account(record))
        for record in rows.get("list", {}).values():
            contact_list = load_list(record)
            self.lists[contact_list.id] = contact_list
        for record in rows.get("blacklist", {}).values():
            owner_list = self.blacklists.setdefault(record["owner"], {})
            owner_list[record["number"]] = datetime.fromisoformat(record["at"])
        for record in rows.get("incoming", {}).values():
            message = load_incoming(record)
            self.incoming.setdefault(message.owner, []).append(message)
        for messages in self.incoming.values():
            messages.sort(key=_AT)
        for record in rows.get("campaign", {}).values():
            self._index_campaign(load_campaign(record))
        for reports in self.reports.values():
            reports.sort(key=_AT)

    def _index_account(self, account: Account) -> None:
        self.accounts[account.username] = account
        if account.token is not None:
            self.by_token[account.token] = account

    def _index_campaign(self, campaign: Campaign) -> None:
        self.campaigns[campaign.id] = campaign
        if campaign.phase is Phase.SCHEDULED:
            heapq.heappush(self._due, (campaign.send_at, campaign.id))
        elif campaign.phase is Phase.SENT:
            heapq.heappush(self._due, (campaign.send_at + self.dlr_delay, campaign.id))
        # Reported deliveries: all of a reported campaign, some of a sent one (settle()).
        reports = self.reports.setdefault(campaign.owner, [])
        reports.extend(Report(d.reported_at, campaign.id, d) for d in campaign.deliveries
                       if d.reported_at is not None)
        if campaign.unsubscribe and campaign.phase is not Phase.CANCELLED:
            self.opt_outable.setdefault(campaign.owner, set()).update(
                d.phone for d in campaign.deliveries)

    # ── Changes ────────────────────────────────────────────────────────────────────────────

    def next_id(self, kind: str) -> int:
        self.ids[kind] += 1
        self._touch("meta", "ids", lambda: self.ids)
        return self.ids[kind]

    def add_account(self, account: Account) -> Account:
        if account.token is not None and account.token in self.by_token:
            raise ValueError(f"two accounts have the token {account.token!r}")
        if not account.user_id:
            account.user_id = self.next_id("user")
        self._index_account(account)
        self.changed(account)
        return account

    def changed(self, account: Account) -> None:
        self._touch("account", account.username, lambda: dump_account(account))

    def launch(self, owner: Account, deliveries: list[Delivery], *, now: datetime,
               send_at: datetime | None, response: bool, unsubscribe: int) -> Campaign:
        """A new campaign, charged now (credits are reserved at schedule time)."""
        at = send_at if send_at is not None and send_at > now else now
        phase = Phase.SCHEDULED if at > now else Phase.SENT
        campaign_id = self.next_id("campaign")
        reply_to = None
        if response:
            # The upstream's own random sender (docs/upstream-protocol.md#reply-numbers); 055 is a
            # virtual operator's prefix, so the number looks reply-able.
            reply_to = f"55{int(self.draw('reply-to', campaign_id) * 10**7):07d}"
        campaign = Campaign(campaign_id, owner.username, at, phase, deliveries, reply_to,
                            unsubscribe)
        owner.credits -= campaign.cost
        self.changed(owner)
        self._index_campaign(campaign)
        self._touch_campaign(campaign)
        return campaign

    def cancel(self, campaign: Campaign) -> None:
        campaign.phase = Phase.CANCELLED
        owner = self.accounts[campaign.owner]
        owner.credits += campaign.cost
        self.changed(owner)
        self._touch_campaign(campaign)

    def receive(self, owner: str, source: str, destination: str, text: str,
                at: datetime) -> Incoming:
        """An SMS from a handset (``source``) to one of the account's numbers. "STOP" or
        "הסר" from a number that got a send with add_unsubscribe blacklists it."""
        message = Incoming(self.next_id("incoming"), owner, source, destination, text, at)
        insort(self.incoming.setdefault(owner, []), message, key=_AT)
        self._touch("incoming", str(message.id), lambda: dump_incoming(message))
        if text.strip().upper() in OPT_OUT_WORDS and source in self.opt_outable.get(owner, ()):
            self.block(owner, source, at)
        return message

    def block(self, owner: str, number: str, at: datetime) -> None:
        self.blacklists.setdefault(owner, {}).setdefault(number, at)
        self._touch_blacklist(owner, number)

    def unblock(self, owner: str, number: str) -> bool:
        if self.blacklists.get(owner, {}).pop(number, None) is None:
            return False
        self._touch_blacklist(owner, number)
        return True

    def reset(self, account: Account, start: Account, now: datetime) -> None:
        """``account`` as it was at ``start``: its campaigns, reports, incoming messages,
        blacklist, contact lists and subscribers are gone, its credits and settings are back
        (the demo account gets its seeded blacklist and messages again)."""
        for subscriber in self.subscribers_of(account.username):
            self._clear(subscriber.username)
            del self.accounts[subscriber.username]
            if subscriber.token is not None:
                self.by_token.pop(subscriber.token, None)
            self._forget("account", subscriber.username)
        self._clear(account.username)
        if account.token is not None:
            self.by_token.pop(account.token, None)
        fresh = replace(start, verified=set(start.verified), user_id=account.user_id)
        for field in fields(Account):
            setattr(account, field.name, getattr(fresh, field.name))
        self._index_account(account)
        self.changed(account)
        if account.username == DEMO_USERNAME:
            self._seed_demo(account, now)

    def _clear(self, owner: str) -> None:
        for campaign in [c for c in self.campaigns.values() if c.owner == owner]:
            del self.campaigns[campaign.id]
            self._forget("campaign", str(campaign.id))
        self.reports.pop(owner, None)
        self.opt_outable.pop(owner, None)
        for message in self.incoming.pop(owner, []):
            self._forget("incoming", str(message.id))
        for number in list(self.blacklists.get(owner, {})):
            self.unblock(owner, number)
        for contact_list in self.lists_of(owner):
            self.remove_list(contact_list)

    def new_list(self, owner: str, name: str) -> ContactList:
        contact_list = ContactList(self.next_id("list"), owner, name)
        self.lists[contact_list.id] = contact_list
        self.list_changed(contact_list)
        return contact_list

    def remove_list(self, contact_list: ContactList) -> None:
        del self.lists[contact_list.id]
        self.list_changed(contact_list)

    def list_changed(self, contact_list: ContactList) -> None:
        key = str(contact_list.id)
        self._touch("list", key, lambda: dump_list(contact_list) if contact_list.id in self.lists
                    else None)

    # ── Time ───────────────────────────────────────────────────────────────────────────────

    def process_due(self, now: datetime) -> None:
        due = self._due
        while due and due[0][0] <= now:
            at, campaign_id = heapq.heappop(due)
            campaign = self.campaigns.get(campaign_id)  # None: its account was reset
            if campaign is None:
                continue
            if campaign.phase is Phase.SCHEDULED:
                campaign.phase = Phase.SENT
                heapq.heappush(due, (at + self.dlr_delay, campaign_id))
                self._touch_campaign(campaign)
            elif campaign.phase is Phase.SENT:
                self._report(campaign, at)

    def next_due(self) -> datetime | None:
        """When the next send or report falls due (or a cancelled campaign would have)."""
        return self._due[0][0] if self._due else None

    def settle(self, campaign: Campaign, delivery: Delivery, status: int, at: datetime) -> None:
        """One delivery's report arrives now, ahead of the campaign's other reports."""
        self._deliver(campaign, delivery, status, at)
        if all(other.reported_at is not None for other in campaign.deliveries):
            campaign.phase = Phase.REPORTED
        self._touch_campaign(campaign)

    def _deliver(self, campaign: Campaign, delivery: Delivery, status: int, at: datetime) -> None:
        delivery.status, delivery.reported_at = status, at
        insort(self.reports.setdefault(campaign.owner, []), Report(at, campaign.id, delivery),
               key=_AT)

    def _report(self, campaign: Campaign, at: datetime) -> None:
        for delivery in campaign.deliveries:
            if delivery.reported_at is not None:  # settled ahead of time
                continue
            self._deliver(campaign, delivery, self._outcome(campaign.id, delivery.phone), at)
            if campaign.reply_to is not None:
                pick = self.draw("reply", campaign.id, delivery.phone)
                self.receive(campaign.owner, delivery.phone, campaign.reply_to,
                             REPLIES[int(pick * len(REPLIES))], at)
        campaign.phase = Phase.REPORTED
        self._touch_campaign(campaign)

    def _outcome(self, campaign_id: int, number: str) -> int:
        if self.draw("dlr", campaign_id, number) >= self.failure_rate:
            return DELIVERED
        return FAILURES[int(self.draw("failure", campaign_id, number) * len(FAILURES))]

    def draw(self, *key: object) -> float:
        """A number in [0, 1) fixed by the seed and the key, whatever the order of events."""
        digest = hashlib.blake2b(repr((self.seed, *key)).encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    # ── Queries ────────────────────────────────────────────────────────────────────────────

    def reports_between(self, owner: str, start: datetime, end: datetime) -> list[Report]:
        """Reports dated in [start, end), oldest first."""
        reports = self.reports.get(owner, [])
        return reports[bisect_left(reports, start, key=_AT):bisect_left(reports, end, key=_AT)]

    def incoming_between(self, owner: str, start: datetime, end: datetime) -> list[Incoming]:
        messages = self.incoming.get(owner, [])
        return messages[bisect_left(messages, start, key=_AT):bisect_left(messages, end, key=_AT)]

    def blacklist_between(self, owner: str, start: datetime,
                          end: datetime) -> list[tuple[str, datetime]]:
        entries = self.blacklists.get(owner, {}).items()
        return sorted(((n, at) for n, at in entries if start <= at < end), key=lambda e: e[1])

    def lists_of(self, owner: str) -> list[ContactList]:
        return sorted((cl for cl in self.lists.values() if cl.owner == owner), key=attrgetter("id"))

    def subscribers_of(self, parent: str) -> list[Account]:
        return sorted((a for a in self.accounts.values() if a.parent == parent),
                      key=attrgetter("user_id"))

    # ── Persistence ────────────────────────────────────────────────────────────────────────

    def _touch(self, kind: str, key: str, record: Callable[[], Any]) -> None:
        if self.store is not None or self.observer is not None:
            self._dirty[kind, key] = record

    def _forget(self, kind: str, key: str) -> None:
        self._touch(kind, key, lambda: None)

    def _touch_campaign(self, campaign: Campaign) -> None:
        self._touch("campaign", str(campaign.id), lambda: dump_campaign(campaign))

    def _touch_blacklist(self, owner: str, number: str) -> None:
        def record() -> dict[str, str] | None:
            at = self.blacklists.get(owner, {}).get(number)
            return None if at is None else {"owner": owner, "number": number, "at": at.isoformat()}

        self._touch("blacklist", f"{owner}\t{number}", record)

    def flush(self) -> None:
        """Hand what changed since the last flush to the store and the observer."""
        if not self._dirty:
            return
        changes = [(kind, key, record()) for (kind, key), record in self._dirty.items()]
        self._dirty.clear()
        if self.store is not None:
            self.store.write(changes)
        if self.observer is not None:
            self.observer(changes)
