"""Standard Webhooks 1.0 signatures (https://www.standardwebhooks.com), made by the
``standardwebhooks`` reference library.

    secret = new_secret()                                  # "whsec_" + base64 of 24 bytes
    headers = signed_headers([secret], "evt_…", moment, body)
    # webhook-id, webhook-timestamp (Unix seconds), webhook-signature: "v1,<base64> v1,<…>"

Each secret still in force signs the message, so while a rotated secret's grace period runs
the receiver finds a signature it can check with either the old or the new secret.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

PREFIX = "whsec_"
SECRET_BYTES = 24  # as Svix's secrets


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def signed_headers(keys: Sequence[str], message_id: str, moment: float,
                   body: str) -> dict[str, str]:
    """The three headers of one attempt, signed with every secret in ``keys``."""
    at = datetime.fromtimestamp(int(moment), UTC)
    signatures = " ".join(Webhook(key).sign(message_id, at, body) for key in keys)
    return {"webhook-id": message_id, "webhook-timestamp": str(int(moment)),
            "webhook-signature": signatures, "content-type": "application/json"}
