"""The words the sandbox answers with.

Status messages are the upstream's own, read from the project's status table
(``proxy/statuses.yaml``, whose ``message`` fields are verbatim texts), never copied here.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

import yaml


def _status_messages() -> dict[int, str]:
    data = yaml.safe_load(resources.files("proxy").joinpath("statuses.yaml").read_text("utf-8"))
    return {int(code): str(rule.get("message", "")) for code, rule in data["codes"].items()}


STATUS_MESSAGES: Final = _status_messages()

# The codes this sandbox answers with; a table without one of them fails at import, by name.
_USED = {1, 2, 3, 4, 8, 9, 10, 11, 503, 504, 510, 511, 515, 933, 955, 966, 977, 986, 988, 989,
         990, 991, 992, 993, 994, 995, 996, 997, 998}
if _USED - STATUS_MESSAGES.keys():
    raise RuntimeError(f"proxy/statuses.yaml lacks codes {sorted(_USED - STATUS_MESSAGES.keys())}")

# Delivery reports: the backend's status codes (docs/upstream-protocol.md#dlr-states), each with a
# Hebrew and an English text, as every report row carries both (docs/upstream-protocol.md#dlr).
DELIVERED: Final = 102
DLR_TEXTS: Final[dict[int, tuple[str, str]]] = {
    102: ("הגיע ליעד", "Delivered"),  # the provider's example's own pair
    1: ("נכשל", "Failed: handset off or out of network"),
    2: ("פג תוקף", "Expired after retries"),
    4: ("לא נמסר על ידי המפעיל", "Not delivered by the operator"),
    7: ("אין יתרה", "No credit"),
    15: ("מספר כשר, לא ניתן לשלוח מסרונים", "Kosher number: SMS not allowed"),
    17: ("הנמען ביקש לא לקבל הודעות", "Recipient opted out"),
    108: ("נדחה", "Rejected"),
    747: ("מחוץ לאזור כיסוי", "Recipient outside local network coverage"),
}
FAILURES: Final = (1, 2, 4, 7, 15, 17, 108, 747)

OPT_OUT_WORDS: Final = frozenset({"STOP", "הסר"})

# What recipients of a response=1 send answer, chosen per recipient by the seed.
REPLIES: Final = ("Thanks", "Thank you!", "OK", "Got it, thanks")

# Seeded incoming messages of the demo account.
SEEDED_INCOMING: Final = ("Hi, is the offer still valid?", "Please call me back")

# verify_phone: the provider's two lines (docs/upstream-protocol.md#verify_phone); landlines are
# verified by a call.
VERIFY_MOBILE: Final = "verification link will be send to {phone}"
VERIFY_LANDLINE: Final = "in order to complete the verification of {phone} call to {line}"
VERIFICATION_LINE: Final = "0500000001"

# The reports a developer can make arrive on the console, by the API's state names.
OUTCOMES: Final = {"delivered": DELIVERED, "failed": 1, "expired": 2}
