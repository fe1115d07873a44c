"""Telling a database that is down or not answering from a fault in our own code.

Both raise django.db.OperationalError on SQLite ("database is locked", but also "no such table"), and
PostgreSQL's errors come with an SQLSTATE that says which. What is unavailability answers 503 and asks
to come back (statuspage/middleware.py, incidents/api/errors.py); anything else stays a 500 with its
traceback logged, because it is a bug to fix, not an outage to wait out.
"""

from __future__ import annotations

import sqlite3

from django.db import InterfaceError, OperationalError

# PostgreSQL SQLSTATE classes: 08 connection exception, 53 insufficient resources (too many
# connections), 57 operator intervention (statement timeout 57014, shutdown 57P01, starting up 57P03),
# 58 system error (I/O).
UNAVAILABLE_SQLSTATE_CLASSES = {"08", "53", "57", "58"}
# SQLite: busy or locked past the timeout, cannot open the file, disk I/O, no space, not a database.
UNAVAILABLE_SQLITE_CODES = {5, 6, 10, 13, 14, 26}


def is_unavailable(error: BaseException) -> bool:
    """True when the error says the database is down, refusing, not answering in time, or overloaded."""
    if isinstance(error, InterfaceError):
        return True  # the connection is closed or broken
    if not isinstance(error, OperationalError):
        return False
    cause = error.__cause__
    if isinstance(cause, sqlite3.OperationalError):
        return getattr(cause, "sqlite_errorcode", None) in UNAVAILABLE_SQLITE_CODES
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate is None:
        return True  # no answer from the server at all: refused, timed out, connection lost
    return str(sqlstate)[:2] in UNAVAILABLE_SQLSTATE_CLASSES
