"""Helpers of the sandbox tests: a client that speaks XML, and readers of answers."""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from proxy.sandbox import ISRAEL, Sandbox

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=ISRAEL)
TODAY = "<from>15/06/25 00:00</from><to>15/06/25 23:59</to>"


def envelope(command: str, inner: str = "", username: str = "demo") -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{command}><user><username>{username}'
            f"</username></user>{inner}</{command}>").encode()


class Client:
    """Speaks XML to a sandbox the way a client of the upstream would."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def raw(self, body: bytes, token: str | None = "demo-token") -> bytes:
        return await self.sandbox.handle(body, None if token is None else f"Bearer {token}")

    async def __call__(self, command: str, inner: str = "", *, username: str = "demo",
                       token: str | None = "demo-token") -> etree._Element:
        return etree.fromstring(await self.raw(envelope(command, inner, username), token))

    async def balance(self, username: str = "demo", token: str = "demo-token") -> int:
        answer = await self("balance", username=username, token=token)
        return int(answer.findtext("balance") or "-1")

    async def sms(self, message: str = "Hello", phones: tuple[str, ...] = ("0521234567",),
                  extra: str = "", source: str = "DemoAPI", **kwargs: str) -> etree._Element:
        destinations = "".join(f"<phone>{phone}</phone>" for phone in phones)
        inner = (f"<source>{source}</source><destinations>{destinations}</destinations>"
                 f"<message>{message}</message>{extra}")
        return await self("sms", inner, **kwargs)


def status(answer: etree._Element) -> int:
    return int(answer.findtext("status") or "-1")


def message(answer: etree._Element) -> str | None:
    return answer.findtext("message")
