"""Logging set-up shared by the sender (CLI) and the receiver (`escp --server`).

--logfile PATH writes timestamped lines to PATH.client (sender) and PATH.server
(receiver: the path travels in SessionInit). --logfile LOCAL0..LOCAL7 sends both sides'
logs to syslog with that facility through /dev/log ($ESCP_SYSLOG_SOCKET overrides the
socket, for tests); when the socket is missing escp warns once and goes on. Every
line carries the side and the session id. -v lowers the level to DEBUG on both sides.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys

SYSLOG_RE = re.compile(r"^local([0-7])$", re.IGNORECASE)
DEFAULT_SYSLOG_SOCKET = "/dev/log"


class SessionTag(logging.Filter):
    """Adds record.side and record.session (set once the session id is known)."""

    def __init__(self, side: str) -> None:
        super().__init__()
        self.side = side
        self.session = "-" * 16

    def filter(self, record: logging.LogRecord) -> bool:
        record.side = self.side
        record.session = self.session
        return True


TAG = SessionTag("client")


def set_session(session_id: int) -> None:
    TAG.session = f"{session_id:016x}"


def syslog_facility(target: str) -> int | None:
    """The syslog facility for LOCAL0..LOCAL7, or None when target is a file path."""
    m = SYSLOG_RE.match(target)
    return logging.handlers.SysLogHandler.LOG_LOCAL0 + int(m.group(1)) if m else None


def make_handler(target: str, side: str) -> logging.Handler | None:
    """A handler for a --logfile target; None (after a warning) when it cannot be opened."""
    facility = syslog_facility(target)
    if facility is not None:
        address = os.environ.get("ESCP_SYSLOG_SOCKET", DEFAULT_SYSLOG_SOCKET)
        if not os.path.exists(address):
            print(f"escp: warning: syslog socket {address} is missing; not logging to {target.upper()}",
                  file=sys.stderr)
            return None
        try:
            h: logging.Handler = logging.handlers.SysLogHandler(address=address, facility=facility)
        except OSError as exc:
            print(f"escp: warning: cannot open syslog socket {address}: {exc.strerror}", file=sys.stderr)
            return None
        h.setFormatter(logging.Formatter("escp[%(process)d]: %(side)s %(session)s %(levelname)s %(message)s"))
        return h
    path = f"{target}.{side}"
    try:
        h = logging.FileHandler(path)
    except OSError as exc:
        print(f"escp: warning: cannot open log file {path}: {exc.strerror}", file=sys.stderr)
        return None
    h.setFormatter(logging.Formatter("%(asctime)s %(side)s %(session)s %(levelname)s %(name)s: %(message)s"))
    return h


def setup_logging(verbose: bool, target: str | None, side: str, stderr: bool = True) -> None:
    """Configure the 'escp' logger tree for one process; side is 'client' or 'server'."""
    TAG.side = side
    root = logging.getLogger("escp")
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    if stderr:
        sh = logging.StreamHandler(sys.stderr)
        sh.setLevel(logging.DEBUG if verbose else logging.WARNING)
        sh.setFormatter(logging.Formatter("escp: %(message)s"))
        sh.addFilter(TAG)
        root.addHandler(sh)
    if target:
        handler = make_handler(target, side)
        if handler is not None:
            handler.addFilter(TAG)
            root.addHandler(handler)
