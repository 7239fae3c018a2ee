"""SQLite persistence: every record is one JSON row of one table, keyed by (kind, key).

The sandbox writes the records an exchange changed at its end, in one transaction, and
reads them all back when it starts on an existing file.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

_SCHEMA = """CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (kind, key))"""

Rows = dict[str, dict[str, Any]]
"""kind -> key -> record."""

Change = tuple[str, str, Any]
"""(kind, key, record): a record written, or None for a record deleted."""


class Store:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        # One connection, used under the sandbox's lock, possibly from several threads.
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._db:
            self._db.execute(_SCHEMA)

    def load(self) -> Rows:
        rows: Rows = {}
        for kind, key, data in self._db.execute("SELECT kind, key, data FROM records"):
            rows.setdefault(kind, {})[key] = json.loads(data)
        return rows

    def write(self, changes: Iterable[Change]) -> None:
        """(kind, key, record) triples; a record of None deletes the row."""
        puts, deletes = [], []
        for kind, key, record in changes:
            if record is None:
                deletes.append((kind, key))
            else:
                puts.append((kind, key, json.dumps(record, ensure_ascii=False)))
        with self._db:
            self._db.executemany("DELETE FROM records WHERE kind = ? AND key = ?", deletes)
            self._db.executemany("INSERT OR REPLACE INTO records VALUES (?, ?, ?)", puts)

    def close(self) -> None:
        self._db.close()
