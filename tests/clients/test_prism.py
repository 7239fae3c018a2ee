"""Prism validates for real: a body that breaks the spec is answered by Prism itself and
never reaches the proxy. (The client scenarios then pass through it with no violation.)"""

from __future__ import annotations

import httpx


def _sends(proxy) -> int:
    return sum(1 for line in proxy.log_lines()
               if line.get("message") == "request" and line.get("route") == "/v1/messages")


def test_prism_refuses_a_body_that_breaks_the_spec(prism, proxy):
    before = _sends(proxy)
    with httpx.Client(base_url=prism.base, auth=("demo", "demo-token"), timeout=30) as client:
        prism.since_last(client)
        # Neither recipients nor contact lists, and a sender of the wrong type.
        answer = client.post("/v1/messages", json={"sender": 5, "text": "hi"})
        assert answer.status_code == 422
        problem = answer.json()
        assert problem["type"] == "https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY"
        assert {("/".join(v["location"]), v["code"]) for v in problem["validation"]} >= {
            ("body/sender", "type"), ("body", "anyOf")}
        requests, violations = prism.since_last(client)  # as the scenarios' tests count them
        assert (requests, len(violations)) == (2, 1)  # the refused body, and the log's probe
    assert _sends(proxy) == before  # not forwarded
    # The same body straight to the proxy: its own problem, so the one above was Prism's.
    direct = httpx.post(proxy.base + "/v1/messages", auth=("demo", "demo-token"),
                        json={"sender": 5, "text": "hi"}, timeout=30)
    assert direct.json()["type"] == "/problems/invalid-request"
