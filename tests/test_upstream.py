from __future__ import annotations

import httpx
import pytest
from lxml import etree

from proxy.errors import UpstreamBadAnswer, UpstreamRefused, UpstreamTimeout, UpstreamUnreachable
from proxy.mapping import load_table
from proxy.upstream import Upstream, parse_answer, read_status

STATUSES = load_table().statuses


def test_parse_answer_reads_the_captured_compact_answer():
    body = (b'<?xml version="1.0" encoding="utf-8"?>\n<sms><status>0</status>'
            b"<message>SMS will be sent</message><shipment_id>890578760</shipment_id></sms>")
    root = parse_answer(body)
    assert root.tag == "sms"
    assert root.findtext("shipment_id") == "890578760"


def test_parse_answer_closes_the_documents_unclosed_shipment_id():
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<dlr><status>0</status><transactions>
<transaction><external_id>1</external_id><shipment_id>12345678<shipment_id>
</transaction>
<transaction><external_id>2</external_id><shipment_id>87654321<shipment_id>
</transaction>
</transactions></dlr>"""
    root = parse_answer(body, ("shipment_id",))
    rows = root.findall("transactions/transaction")
    assert [r.findtext("shipment_id") for r in rows] == ["12345678", "87654321"]


def test_parse_answer_reads_the_rootless_rmnumbl_answer():
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<status>944</status>
<message>1 phone numbers Successfully deleted , 1 Phone numbers not exist in blacklist</message>"""
    answer = read_status(parse_answer(body), STATUSES)
    assert answer.status == 944
    assert answer.message.startswith("1 phone numbers")


def test_parse_answer_honours_a_declared_encoding():
    body = '<?xml version="1.0" encoding="windows-1255"?><x><status>0</status><message>שלום</message></x>'
    assert parse_answer(body.encode("windows-1255")).findtext("message") == "שלום"


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x><status>&e;</status></x>',
    b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><x><status>0</status><message>&lol2;</message></x>',
    b"<html><body>502 Bad Gateway</body></html>",
    b"<sms><status>0</status><message>cut",
    b"not xml at all",
    b'<?xml version="1.0" encoding="utf-8"?><sms><status>0</status><message>\xff\xfe</message></sms>',
])
def test_parse_answer_refuses_what_is_not_a_plain_answer(body):
    with pytest.raises(UpstreamBadAnswer):
        parse_answer(body)


@pytest.mark.parametrize("status, http, slug", [
    ("3", 401, "invalid-credentials"), ("4", 402, "insufficient-credit"),
    (" 977 ", 404, "campaign-not-found"), ("12", 402, "insufficient-funds"),
    ("515", 403, "unverified-sender"), ("4242", 502, "upstream-unknown-status"),
])
def test_read_status_maps_codes_and_keeps_the_raw_number(status, http, slug):
    root = etree.fromstring(f"<x><status>{status}</status><message>m</message></x>")
    with pytest.raises(UpstreamRefused) as caught:
        read_status(root, STATUSES)
    problem = caught.value.as_json()
    assert (problem["status"], problem["type"]) == (http, f"/problems/{slug}")
    assert problem["upstream_status"] == int(status)
    assert problem["upstream_message"] == "m"


def test_read_status_fills_in_the_documented_message_when_the_upstream_sends_none():
    root = etree.fromstring("<x><status>955</status></x>")
    with pytest.raises(UpstreamRefused) as caught:
        read_status(root, STATUSES)
    assert caught.value.as_json()["upstream_message"] == "Campaign already cancel"


def test_read_status_treats_944_as_success():
    assert read_status(etree.fromstring("<x><status>944</status></x>"), STATUSES).status == 944


def _upstream(handler, **kwargs) -> tuple[Upstream, httpx.MockTransport]:
    transport = httpx.MockTransport(handler)
    return Upstream(transport, "http://upstream.test/api", STATUSES, **kwargs), transport


async def test_call_sends_utf8_xml_with_the_bearer_token():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.update(body=request.content, headers=request.headers)
        return httpx.Response(200, content=b"<balance><status>0</status><balance>42</balance></balance>")

    upstream, transport = _upstream(handler)
    envelope = etree.fromstring("<balance><user><username>דני</username></user></balance>")
    async with transport:
        answer = await upstream.call(envelope, "tok-1")
    assert answer.root.findtext("balance") == "42"
    assert seen["headers"]["authorization"] == "Bearer tok-1"
    assert seen["headers"]["content-type"] == "application/xml; charset=utf-8"
    assert etree.fromstring(seen["body"]).findtext("user/username") == "דני"
    assert seen["body"].startswith(b"<?xml version='1.0' encoding='UTF-8'?>")


@pytest.mark.parametrize("fault, error", [
    (httpx.ConnectError("refused"), UpstreamUnreachable),
    (httpx.ConnectTimeout("slow"), UpstreamUnreachable),
    (httpx.ReadTimeout("slow"), UpstreamTimeout),
    (httpx.RemoteProtocolError("reset"), UpstreamBadAnswer),
])
async def test_call_translates_transport_failures(fault, error):
    def handler(request: httpx.Request) -> httpx.Response:
        raise fault

    upstream, transport = _upstream(handler)
    async with transport:
        with pytest.raises(error):
            await upstream.call(etree.Element("balance"), "t")


@pytest.mark.parametrize("response", [
    httpx.Response(500, content=b"<x><status>0</status></x>"),
    httpx.Response(200, content=b""),
    httpx.Response(200, content=b"<x><status>0</status>" + b"<p>x</p>" * 200),
])
async def test_call_refuses_http_errors_empty_and_oversized_answers(response):
    upstream, transport = _upstream(lambda request: response, max_answer_bytes=1000)
    async with transport:
        with pytest.raises(UpstreamBadAnswer):
            await upstream.call(etree.Element("balance"), "t")
