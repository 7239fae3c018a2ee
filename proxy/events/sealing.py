"""Clients' SMS Leads tokens, kept sealed: AES-256-GCM (``cryptography``), keys from a setting.

    sealer = Sealer.from_setting("k2base64…,k1base64…")   # the first seals, all open
    sealed = sealer.seal("the-token", context="wh_1f…")     # "v1.<key id>.<base64>"
    sealer.open(sealed, context="wh_1f…")                   # "the-token"

A multi-tenant proxy must poll with each client's own token, so it keeps the token, never in
clear. The context (the subscription's id) is authenticated with it: a sealed token copied into
another subscription does not open. Rotation: put a new key first, which seals the tokens of
new subscriptions; a token sealed with an older key opens while that key is listed, so keep it
listed until the subscriptions made before the rotation are gone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
NONCE = 12


class SealError(ValueError):
    """A key setting that is not one, or a sealed token no key opens (never says the key)."""


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"smsleads-proxy token key\0" + key).hexdigest()[:8]


def _decode(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SealError("a token key is base64 of 32 random bytes") from exc
    if len(key) != 32:
        raise SealError("a token key is base64 of 32 random bytes (AES-256)")
    return key


@dataclass(frozen=True, slots=True)
class Sealer:
    keys: tuple[bytes, ...] = field(repr=False)

    @classmethod
    def from_setting(cls, text: str) -> Sealer:
        keys = tuple(_decode(part) for part in text.split(",") if part.strip())
        if not keys:
            raise SealError("no token key given")
        return cls(keys)

    def seal(self, secret: str, context: str) -> str:
        key, nonce = self.keys[0], os.urandom(NONCE)
        sealed = AESGCM(key).encrypt(nonce, secret.encode("utf-8"), context.encode("utf-8"))
        text = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{VERSION}.{_key_id(key)}.{text}"

    def open(self, sealed: str, context: str) -> str:
        version, key_id, text = [*sealed.split("."), "", ""][:3]
        key = next((k for k in self.keys if _key_id(k) == key_id), None)
        if version != VERSION or key is None:
            raise SealError("the token was sealed with a key that is no longer listed")
        try:
            raw = base64.urlsafe_b64decode(text)
            return AESGCM(key).decrypt(raw[:NONCE], raw[NONCE:],
                                       context.encode("utf-8")).decode("utf-8")
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealError("the sealed token does not open (altered, or moved)") from exc
