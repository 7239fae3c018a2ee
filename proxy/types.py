"""Type aliases shared across the package."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeAlias

JSON: TypeAlias = "dict[str, JSON] | list[JSON] | str | int | float | bool | None"
"""A value as json.loads returns it."""

Clock: TypeAlias = "Callable[[], datetime]"
"""The app's clock: an aware datetime (tests hand in a fixed or moving one)."""
