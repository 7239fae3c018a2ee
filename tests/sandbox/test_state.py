"""Time, persistence and reproducibility: the sandbox's state as a client sees it."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from proxy.sandbox import ISRAEL, Account, Conflict, FixedClock, Sandbox, SystemClock
from proxy.sandbox.clock import format_time, parse_time
from tests.sandbox.support import TODAY, Client, envelope, status

NULL = "<transactions><external_id>null</external_id></transactions>"


# ── Israel time and daylight saving ──────────────────────────────────────────────────────


@pytest.mark.parametrize(("text", "utc", "back"), [
    ("15/01/25 12:00", "2025-01-15T10:00:00+00:00", "15/01/25 12:00"),  # winter, +02:00
    ("15/06/25 12:00", "2025-06-15T09:00:00+00:00", "15/06/25 12:00"),  # summer, +03:00
    # Summer time ends 27/10/24 02:00 -> 01:00: 01:30 happens twice; the first is meant.
    ("27/10/24 01:30", "2024-10-26T22:30:00+00:00", "27/10/24 01:30"),
    # Summer time starts 27/03/26 02:00 -> 03:00: 02:30 does not exist; it reads as 03:30.
    ("27/03/26 02:30", "2026-03-27T00:30:00+00:00", "27/03/26 03:30"),
    ("27/03/26 03:30", "2026-03-27T00:30:00+00:00", "27/03/26 03:30"),
])
def test_clock_wire_times_are_israel_time_across_dst(text: str, utc: str, back: str) -> None:
    moment = parse_time(text)
    assert moment is not None and moment.isoformat() == utc
    assert format_time(moment) == back


async def test_sms_timing_on_the_night_summer_time_starts_goes_out_at_the_real_hour() -> None:
    clock = FixedClock(datetime(2026, 3, 27, 1, 30, tzinfo=ISRAEL))  # +02:00
    sandbox = Sandbox(clock=clock, seed=1, dlr_delay=timedelta(0))
    client = Client(sandbox)
    sent = await client.sms(extra="<timing>27/03/26 03:30</timing>")  # +03:00: one hour on
    inner = f"<campaign_id>{sent.findtext('shipment_id')}</campaign_id>"
    sandbox.advance(timedelta(minutes=59))
    window = "<from>27/03/26 00:00</from><to>27/03/26 06:00</to>"
    assert (await client("dlrByDate", NULL + window)).findall("transactions/transaction") == []
    sandbox.advance(timedelta(minutes=1))
    (row,) = (await client("dlrByDate", NULL + window)).findall("transactions/transaction")
    assert row.findtext("date") == "27/03/26 03:30"
    assert status(await client("cancel", inner)) == 966


async def test_sms_timing_in_the_repeated_hour_means_the_first_one() -> None:
    clock = FixedClock(datetime(2024, 10, 27, 0, 0, tzinfo=ISRAEL))  # +03:00
    sandbox = Sandbox(clock=clock, seed=1, dlr_delay=timedelta(0))
    client = Client(sandbox)
    await client.sms(extra="<timing>27/10/24 01:30</timing>")
    sandbox.advance(timedelta(minutes=90))
    window = "<from>27/10/24 00:00</from><to>27/10/24 06:00</to>"
    (row,) = (await client("dlrByDate", NULL + window)).findall("transactions/transaction")
    assert row.findtext("date") == "27/10/24 01:30"


def test_fixed_clock_needs_an_aware_start_and_only_moves_forward() -> None:
    with pytest.raises(ValueError, match="aware"):
        FixedClock(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="forward"):
        FixedClock().advance(timedelta(seconds=-1))


def test_sandbox_advance_needs_a_fixed_clock() -> None:
    with pytest.raises(Conflict, match=r"system clock.*FixedClock"):
        Sandbox(clock=SystemClock()).advance(timedelta(seconds=1))


async def test_system_clock_processes_due_reports_lazily() -> None:
    client = Client(Sandbox(seed=1, dlr_delay=timedelta(0)))
    await client.sms()
    now = datetime.now(ISRAEL)
    window = (f"<from>{format_time(now - timedelta(days=1))}</from>"
              f"<to>{format_time(now + timedelta(minutes=1))}</to>")
    answer = await client("dlrByDate", NULL + window)
    assert len(answer.findall("transactions/transaction")) == 1


# ── GSM-7 / UCS-2 parts ──────────────────────────────────────────────────────────────────


# ── SQLite persistence ───────────────────────────────────────────────────────────────────


async def test_sqlite_state_survives_a_restart(tmp_path: Path, clock: FixedClock) -> None:
    db = tmp_path / "sandbox.db"
    first = Sandbox(clock=clock, seed=5, db_path=db,
                    accounts=[Account("acme", "acme-token", 50)])
    client = Client(first)
    sent = await client.sms(phones=("0521234567", "0521234568"))
    scheduled = await client.sms(extra="<timing>15/06/25 14:00</timing>")
    created = await client("newCL", "<cl><name>kept</name><destinations><destination><phone>"
                                    "0541234567</phone></destination></destinations></cl>")
    await client("addSub", "<userDetails><name>Sub one</name><username>subone</username>"
                           "<password>secret1</password><source>Shop</source><amount>10"
                           "</amount></userDetails>")
    await client("verify_phone", "<phone>0541234567</phone>")
    await client("rmNumBL", "<phones><phone>0529999999</phone></phones><reason>x</reason>")
    first.advance(timedelta(seconds=2))
    before = {command: await client.raw(envelope(command, inner)) for command, inner in [
        ("balance", ""), ("getCL", ""), ("getBlanceSubs", ""), ("dlrByDate", NULL + TODAY),
        ("incoming", TODAY), ("blacklist", "<from>10/06/25 00:00</from><to>15/06/25 23:59</to>")]}
    first.close()

    second = Sandbox(clock=clock, seed=999, db_path=db)
    again = Client(second)
    for command, answer in before.items():
        inner = {"dlrByDate": NULL + TODAY, "incoming": TODAY,
                 "blacklist": "<from>10/06/25 00:00</from><to>15/06/25 23:59</to>"}.get(command, "")
        assert await again.raw(envelope(command, inner)) == answer, command
    assert await again.balance("acme", "acme-token") == 50
    assert status(await again.sms(source="0541234567")) == 0  # still verified
    cl_id = created.findtext("identifiers/identifier")
    assert status(await again("getCLbyID", f"<cl><id>{cl_id}</id></cl>")) == 0
    cancel = f"<campaign_id>{sent.findtext('shipment_id')}</campaign_id>"
    assert status(await again("cancel", cancel)) == 966
    second.advance(timedelta(hours=2))  # the scheduled campaign goes out after the restart
    cancel = f"<campaign_id>{scheduled.findtext('shipment_id')}</campaign_id>"
    assert status(await again("cancel", cancel)) == 966
    reports = await again("dlrByDate", NULL + TODAY)
    assert len(reports.findall("transactions/transaction")) == 4
    second.close()


async def test_sqlite_restart_continues_ids_and_keeps_the_seed(tmp_path: Path,
                                                               clock: FixedClock) -> None:
    db = tmp_path / "ids.db"
    first = Sandbox(clock=clock, seed=5, db_path=db)
    one = int((await Client(first).sms()).findtext("shipment_id") or 0)
    first.close()
    second = Sandbox(clock=clock, seed=6, db_path=db)
    two = int((await Client(second).sms()).findtext("shipment_id") or 0)
    second.close()
    memory = Sandbox(clock=clock, seed=5)
    await Client(memory).sms()
    assert two == one + 1 == int((await Client(memory).sms()).findtext("shipment_id") or 0)


# ── Reproducibility ──────────────────────────────────────────────────────────────────────


async def play(seed: int) -> list[bytes]:
    """A session touching every random choice: ids, reply numbers and texts, outcomes."""
    sandbox = Sandbox(clock=FixedClock(datetime(2025, 6, 15, 12, 0, tzinfo=ISRAEL)), seed=seed,
                      failure_rate=0.3)
    client = Client(sandbox)
    phones = "".join(f"<phone id='p{n}'>05200000{n:02d}</phone>" for n in range(20))
    answers = [
        await client.raw(envelope("sms", f"<source>DemoAPI</source><destinations>{phones}"
                                         "</destinations><message>Hi</message>"
                                         "<response>1</response>")),
        await client.raw(envelope("newCL", "<cl><name>x</name></cl>")),
        await client.raw(envelope("addSub", "<userDetails><name>Sub one</name><username>subone"
                                            "</username><password>secret1</password><source>S"
                                            "</source><amount>1</amount></userDetails>")),
    ]
    sandbox.advance(timedelta(seconds=2))
    for command, inner in (("dlrByDate", NULL + TODAY), ("incoming", TODAY),
                           ("getBlanceSubs", "")):
        answers.append(await client.raw(envelope(command, inner)))
    return answers


async def test_same_seed_same_answers_other_seed_other_answers() -> None:
    first, second, other = await play(42), await play(42), await play(43)
    assert first == second
    assert all(a != b for a, b in zip(first, other, strict=True) if b"<shipment_id>" in a)
    assert first[3] != other[3]
