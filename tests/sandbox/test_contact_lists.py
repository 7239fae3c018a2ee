"""Contact lists (2.6): partial successes reported under <errors>, rows per member."""

from __future__ import annotations

from lxml import etree

from proxy.sandbox import Account, FixedClock, Sandbox
from tests.sandbox.support import Client, message, status


def errors(answer: etree._Element) -> list[str | None]:
    return [error.text for error in answer.findall("errors/error")]


async def new_list(client: Client, name: str, *phones: str, **kwargs: str) -> str:
    destinations = "".join(f"<destination><phone>{p}</phone></destination>" for p in phones)
    answer = await client("newCL", f"<cl><name>{name}</name><destinations>{destinations}"
                                   "</destinations></cl>", **kwargs)
    return answer.findtext("identifiers/identifier") or ""


async def members(client: Client, cl_id: str) -> list[str | None]:
    answer = await client("getCLbyID", f"<cl><id>{cl_id}</id></cl>")
    return [row.findtext("phone") for row in answer.findall("contact_lists/contact_list")]


async def test_newcl_answers_an_empty_errors_element_when_all_went_well(client: Client) -> None:
    answer = await client("newCL", "<cl><name>a</name><destinations><destination><phone>"
                                   "0521234567</phone></destination></destinations></cl>")
    assert [c.tag for c in answer] == ["status", "message", "errors", "identifiers"]
    assert errors(answer) == []


async def test_newcl_keeps_a_number_once_per_list(client: Client) -> None:
    cl_id = await new_list(client, "dups", "0521234567", "521234567", "0521234568")
    assert await members(client, cl_id) == ["0521234567", "0521234568"]


async def test_newcl_without_cl_or_name_is_2(client: Client) -> None:
    assert message(await client("newCL")) == "Missing field: cl"
    assert message(await client("newCL", "<cl><name> </name></cl>")) == "Missing field: name"
    assert message(await client("newCL", "<cl><destinations/></cl>")) == "Missing field: name"


async def test_getcl_shows_an_empty_list_as_one_row_with_an_empty_phone(client: Client) -> None:
    cl_id = await new_list(client, "empty")
    answer = await client("getCL")
    (row,) = answer.findall("contact_lists/contact_list")
    assert [(c.tag, c.text) for c in row] == [("cl_id", cl_id), ("phone", None), ("name", "empty")]


async def test_getcl_shows_only_own_lists(clock: FixedClock) -> None:
    client = Client(Sandbox(clock=clock, seed=1, accounts=[Account("o", "o-token", 5)]))
    await new_list(client, "theirs", "0521234567", username="o", token="o-token")
    assert (await client("getCL")).findall("contact_lists/contact_list") == []


async def test_getclbyid_unknown_or_foreign_is_988(clock: FixedClock) -> None:
    client = Client(Sandbox(clock=clock, seed=1, accounts=[Account("o", "o-token", 5)]))
    theirs = await new_list(client, "theirs", "0521234567", username="o", token="o-token")
    for cl_id in (theirs, "1", "x"):
        answer = await client("getCLbyID", f"<cl><id>{cl_id}</id></cl>")
        assert (status(answer), message(answer)) == (988, "Contact list are entered not exist")


async def test_addnumcl_adds_and_reports_bad_phones_and_unknown_lists(client: Client) -> None:
    cl_id = await new_list(client, "a", "0521234567")
    answer = await client("addNumCL", f"""
        <cl><id>{cl_id}</id><destinations>
            <destination><phone>0521234568</phone><df1>Dana</df1></destination>
            <destination><phone>05212</phone></destination></destinations></cl>
        <cl><id>21500</id><destinations>
            <destination><phone>0521234569</phone></destination></destinations></cl>""")
    assert (status(answer), message(answer)) == (0, "Successfully added phone numbers")
    assert errors(answer) == [
        "The phone 05212 is too long or too short or contain characters and therefore not added",
        "contact list id: 21500 does not exist and therefore not added"]
    assert await members(client, cl_id) == ["0521234567", "0521234568"]


async def test_rmnumcl_removes_and_reports_what_was_not_there(client: Client) -> None:
    cl_id = await new_list(client, "a", "0521234567", "0521234568")
    answer = await client("rmNumCL", f"""
        <cl><id>{cl_id}</id><destinations><phone>521234567</phone><phone>0529999990</phone>
        </destinations></cl>
        <cl><id>21500</id><destinations><phone>0521234568</phone></destinations></cl>""")
    assert (status(answer), message(answer)) == (0, "Successfully deleted phone numbers")
    assert errors(answer) == [
        f"phone 0529999990 does not exist in contact list id: {cl_id} and therefore not removed",
        "contact list id: 21500 does not exist and therefore not removed"]
    assert await members(client, cl_id) == ["0521234568"]


async def test_removecl_is_status_0_even_when_no_id_existed(client: Client) -> None:
    answer = await client("removeCL", "<cl><id>1</id><id>abc</id></cl>")
    assert (status(answer), message(answer)) == (0, "contact list successfully removed")
    assert errors(answer) == ["contact list id: 1 does not exist and therefore not removed",
                              "contact list id: abc does not exist and therefore not removed"]


async def test_removecl_removes_the_list(client: Client) -> None:
    cl_id = await new_list(client, "gone", "0521234567")
    assert errors(await client("removeCL", f"<cl><id>{cl_id}</id></cl>")) == []
    assert status(await client("getCLbyID", f"<cl><id>{cl_id}</id></cl>")) == 988
    answer = await client("sms", f"<source>DemoAPI</source><destinations><cl_id>{cl_id}</cl_id>"
                                 "</destinations><message>Hi</message>")
    assert status(answer) == 988


async def test_removed_list_members_are_not_sent_to(client: Client) -> None:
    cl_id = await new_list(client, "a", "0521234567", "0521234568")
    await client("rmNumCL", f"<cl><id>{cl_id}</id><destinations><phone>0521234567</phone>"
                            "</destinations></cl>")
    await client("sms", f"<source>DemoAPI</source><destinations><cl_id>{cl_id}</cl_id>"
                        "</destinations><message>Hi</message>")
    assert await client.balance() == 999
