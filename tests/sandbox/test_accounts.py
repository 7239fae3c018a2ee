"""Subscribers (2.5) and sender verification (2.8)."""

from __future__ import annotations

import pytest

from proxy.sandbox import Account, FixedClock, Sandbox
from tests.sandbox.support import Client, message, status


def details(name: str = "Israel Israeli", username: str = "israeli", password: str = "secret1",
            source: str = "Shop", amount: str = "100") -> str:
    return (f"<userDetails><name>{name}</name><username>{username}</username>"
            f"<password>{password}</password><source>{source}</source>"
            f"<amount>{amount}</amount></userDetails>")


async def subscribers(client: Client) -> list[list[str | None]]:
    answer = await client("getBlanceSubs")
    return [[c.text for c in row] for row in answer.findall("balances/balance")]


async def test_addsub_moves_the_amount_from_the_parent(client: Client) -> None:
    assert status(await client("addSub", details(amount="300"))) == 0
    assert await client.balance() == 700
    ((amount, user_id, name),) = await subscribers(client)
    assert (amount, name) == ("300", "Israel Israeli")
    assert user_id is not None and user_id.isdigit()


@pytest.mark.parametrize(("fields", "code", "text"), [
    ({"name": "I"}, 996, "The name is too long or too short"),
    ({"name": "x" * 51}, 996, "The name is too long or too short"),
    ({"username": "abc"}, 995, "The username is too long or too short"),
    ({"username": "a" * 21}, 995, "The username is too long or too short"),
    ({"username": "demo"}, 994, "Username already exists"),
    ({"password": "12345"}, 993, "The password is too long or too short"),
    ({"password": "p" * 21}, 993, "The password is too long or too short"),
    ({"source": "ABCDEFGHIJKL"}, 992, "The source is too long or too short"),
    ({"amount": "1e3"}, 991, "The amount must contain only digits"),
    ({"amount": "-5"}, 991, "The amount must contain only digits"),
    ({"amount": "1001"}, 990, "Amount must be small amount of your credits"),
])
async def test_addsub_validation_codes(client: Client, fields: dict[str, str], code: int,
                                       text: str) -> None:
    answer = await client("addSub", details(**fields))
    assert (status(answer), message(answer)) == (code, text)
    assert await client.balance() == 1000
    assert await subscribers(client) == []


async def test_addsub_username_taken_by_another_subscriber_is_994(client: Client) -> None:
    await client("addSub", details())
    assert status(await client("addSub", details(name="Other one"))) == 994


async def test_addsub_missing_detail_is_2(client: Client) -> None:
    answer = await client("addSub", "<userDetails><name>Israel</name></userDetails>")
    assert message(answer) == "Missing field: username"
    assert message(await client("addSub")) == "Missing field: userDetails"


async def test_updateamountsub_transfers_from_parent_to_subscriber(client: Client) -> None:
    await client("addSub", details(amount="100"))
    answer = await client("updateAmountSub", "<userDetails><username>israeli</username>"
                                             "<password>secret1</password><amount>50</amount>"
                                             "</userDetails>")
    assert (status(answer), message(answer)) == (0, "Wallet successfully updated")
    assert await client.balance() == 850
    assert (await subscribers(client))[0][0] == "150"


@pytest.mark.parametrize(("username", "password", "amount", "code"), [
    ("israeli", "wrong12", "5", 503), ("nobody", "secret1", "5", 503),
    ("demo", "", "5", 503), ("israeli", "secret1", "x", 991), ("israeli", "secret1", "901", 990),
])
async def test_updateamountsub_refusals(client: Client, username: str, password: str,
                                        amount: str, code: int) -> None:
    await client("addSub", details(amount="100"))
    answer = await client("updateAmountSub", f"<userDetails><username>{username}</username>"
                                             f"<password>{password}</password>"
                                             f"<amount>{amount}</amount></userDetails>")
    assert status(answer) == code
    assert await client.balance() == 900


async def test_subscriber_may_not_manage_subscribers_511(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[
        Account("child", "child-token", 10, parent="demo", password="secret1")])
    client = Client(sandbox)
    for command, inner in (("addSub", details()), ("getBlanceSubs", ""),
                           ("updateAmountSub", details())):
        answer = await client(command, inner, username="child", token="child-token")
        assert (status(answer), message(answer)) == (
            511, "you have not permission for this function")
    assert [row[0] for row in await subscribers(client)] == ["10"]  # the parent sees its child


async def test_getblancesubs_only_lists_own_subscribers(clock: FixedClock) -> None:
    sandbox = Sandbox(clock=clock, seed=1, accounts=[Account("other", "other-token", 100)])
    client = Client(sandbox)
    await client("addSub", details(username="theirs", amount="10"), username="other",
                 token="other-token")
    await client("addSub", details(username="mine1", name="Mine", amount="20"))
    assert [row[2] for row in await subscribers(client)] == ["Mine"]


async def test_verify_phone_without_valid_phones_is_510(client: Client) -> None:
    for inner in ("", "<phone>123</phone>", "<phone></phone>"):
        answer = await client("verify_phone", inner)
        assert (status(answer), message(answer)) == (
            510, "invalid verify_phone request: no phones to verify")


async def test_verify_phone_skips_invalid_numbers(client: Client) -> None:
    answer = await client("verify_phone", "<phone>123</phone><phone>0541234567</phone>")
    assert answer.findtext("verify_message") == "verification link will be send to 0541234567"


async def test_verify_phone_makes_a_landline_an_allowed_sender(client: Client) -> None:
    assert status(await client.sms(source="031234567")) == 515
    assert status(await client("verify_phone", "<phone>31234567</phone>")) == 0
    assert status(await client.sms(source="031234567")) == 0
    assert status(await client.sms(source="31234567")) == 0
