"""Work that only one agent may do at a time, on a database several agents share.

On PostgreSQL, session-level advisory locks (``pg_try_advisory_lock``) held on one dedicated
connection for the length of the work: the server releases them when the work ends, and also
when the holder's connection drops (a killed agent never leaves a lock behind). On SQLite one
machine owns the database file, and the work is already serialised by its write lock, so the
lock is always granted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``name`` (advisory locks are keyed by a bigint)."""
    digest = hashlib.blake2b(f"liver-agent:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def is_shared(engine: Engine) -> bool:
    """True where several agents may share the database (anything but SQLite)."""
    return engine.dialect.name != "sqlite"


@contextmanager
def exclusive(engine: Engine, name: str) -> Iterator[bool]:
    """Try to take the lock ``name`` for the block; yields whether it was taken (never
    waits). The caller skips its work when it was not: another agent is doing it now.

    Examples
    --------
    >>> with exclusive(engine, "completion") as mine:  # doctest: +SKIP
    ...     if mine:
    ...         complete_ready_studies(...)
    """
    if not is_shared(engine):
        yield True
        return
    key = lock_key(name)
    with engine.connect() as conn:
        taken = bool(conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
        conn.commit()
        try:
            yield taken
        finally:
            if taken:
                conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


def wait_transaction_lock(conn: Connection, name: str) -> None:
    """Wait for the lock ``name`` until ``conn``'s transaction ends (PostgreSQL's
    ``pg_advisory_xact_lock``); nothing on SQLite, whose writers are serialised already."""
    if conn.dialect.name == "sqlite":
        return
    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
