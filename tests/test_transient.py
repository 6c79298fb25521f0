"""Which failures are tried again (storage.transient, issue 14 item 2): a dependency down
or busy is; a bad request is not. A table of what the drivers actually raise."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from storage.s3wire import S3StoreError
from storage.transient import Backoff, is_transient


class PgError(Exception):
    """Stands for an asyncpg error: what SQLAlchemy wraps carries a ``sqlstate``."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def caused(outer: Exception, cause: Exception) -> Exception:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked")), True),
        (OperationalError("INSERT", {}, sqlite3.OperationalError("no such table: x")), False),
        (IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), False),
        (OperationalError("SELECT", {}, PgError("40001")), True),  # serialization failure
        (OperationalError("SELECT", {}, PgError("40P01")), True),  # deadlock
        (OperationalError("SELECT", {}, PgError("57P01")), True),  # admin shutdown
        (OperationalError("SELECT", {}, PgError("08006")), True),  # connection failure
        (IntegrityError("INSERT", {}, PgError("23505")), False),  # unique violation
        (DataError("INSERT", {}, PgError("22001")), False),  # value too long
        (ConnectionRefusedError(111, "Connection refused"), True),
        (OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 5)"), True),
        (TimeoutError(), True),
        (S3StoreError(operation="HeadObject", code="unreachable", message="down"), True),
        (S3StoreError(operation="PutObject", code="ServiceUnavailable", message="x"), True),
        (S3StoreError(operation="PutObject", code="NoSuchBucket", message="x"), False),
        (ValueError("bad input"), False),
        (caused(RuntimeError("batch failed"), ConnectionResetError()), True),
    ],
)
def test_what_is_worth_trying_again(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    delays = Backoff(first=0.1, cap=0.5).delays()
    got = [next(delays) for _ in range(6)]
    for delay, nominal in zip(got, [0.1, 0.2, 0.4, 0.5, 0.5, 0.5], strict=True):
        assert nominal / 2 <= delay <= nominal
