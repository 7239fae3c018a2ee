"""schemathesis hooks for tests/test_schemathesis.py (tests/schemathesis.toml loads them).

A client sends a new Idempotency-Key with each new request (openapi.yaml, IdempotencyKey):
the same key with another request is refused by design, a 422 no schema can foresee. Keys
that schemathesis drew valid are made unique here; invalid ones (negative tests) are kept.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

HEADER = "Idempotency-Key"
VALID = re.compile(r'(?:[!#-~]{1,255}|"[ !#-\[\]-~]{1,255}")')  # openapi.yaml's pattern


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == HEADER.lower() and isinstance(value, str) and VALID.fullmatch(value):
            headers[name] = str(uuid.uuid4())
