"""Test-only fault injection for the I/O engine, driven by the ESCP_FAULT variable.

Inactive (one global boolean test per call site) unless ESCP_FAULT is set in the
environment of the process that does the I/O: the receiver writes, creates, fsyncs and
renames; the sender reads. With --local both processes inherit the variable. The spec is
parsed once, by `configure()`, at the start of `escp` (sender) and `escp --server`
(receiver); a malformed spec is a usage error.

    ESCP_FAULT = RULE[;RULE...]
    RULE       = OP:WHAT[:after=N][:times=M][:match=TEXT][:ms=N][:file=PATH]
    OP         = open | read | write | fsync | rename | create | mkdir   (open, read: sender)
    WHAT       = an errno name (EIO, ENOSPC, EDQUOT, EACCES, EPERM, EROFS, EINTR, EAGAIN, ENOMEM ...),
                 `short` (read/write: transfer about half the bytes asked for),
                 `delay` (sleep ms=N milliseconds, default 100, then do the call: a pacer), or
                 `hold` (wait until file=PATH exists, at most ms=N milliseconds, default 60000,
                 then do the call: a gate the test opens once it has observed what it wanted)
    after=N    = let the first N matching calls pass (default 0)
    times=M    = then inject M times (default 1; `inf` for every later call)
    match=TEXT = only calls whose file name contains TEXT (default: every file)
    ms=N       = the sleep of `delay`, the longest wait of `hold`
    file=PATH  = the file whose existence releases `hold` (PATH must not contain ':' or ';')

Examples: `write:EIO:after=3` (the 4th block write fails), `fsync:EIO`,
`write:ENOSPC:times=inf`, `create:EACCES:match=locked/:times=inf`, `write:short:times=50`,
`read:hold:after=2:times=inf:file=/tmp/go` (reads after the second wait for /tmp/go).
Counting is per process and thread-safe.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from dataclasses import dataclass

from ..errors import UsageError

ENV = "ESCP_FAULT"
OPS = ("open", "read", "write", "fsync", "rename", "create", "mkdir")
SHORT = "short"
DELAY = "delay"
HOLD = "hold"
DELAY_MS = 100  # `delay` without ms=
HOLD_MS = 60_000  # `hold` without ms=: a forgotten gate still ends
HOLD_POLL = 0.01  # seconds between looks at a hold's file

ACTIVE = False  # call sites test this first: no cost when no fault is configured


@dataclass
class Rule:
    op: str
    what: str  # errno name, "short", "delay" or "hold"
    after: int = 0
    times: int | None = 1  # None: no limit
    match: bytes = b""
    ms: int | None = None  # None: DELAY_MS / HOLD_MS
    file: str = ""  # `hold`: released once this file exists
    calls: int = 0

    def fires(self, name: bytes) -> bool:
        if self.match and self.match not in name:
            return False
        self.calls += 1
        if self.calls <= self.after:
            return False
        return self.times is None or self.calls <= self.after + self.times


_rules: list[Rule] = []
_lock = threading.Lock()


def parse(spec: str) -> list[Rule]:
    rules: list[Rule] = []
    for text in filter(None, (t.strip() for t in spec.split(";"))):
        fields = text.split(":")
        if len(fields) < 2 or fields[0] not in OPS:
            raise UsageError(f"{ENV}: bad rule {text!r} (expected OP:ERRNO[:after=N][:times=M][:match=TEXT], "
                             f"OP one of {', '.join(OPS)})")
        op, what = fields[0], fields[1]
        if what not in (SHORT, DELAY, HOLD) and not isinstance(getattr(errno, what, None), int):
            raise UsageError(f"{ENV}: unknown errno name {what!r} in {text!r}")
        if what == SHORT and op not in ("read", "write"):
            raise UsageError(f"{ENV}: 'short' applies to read and write only ({text!r})")
        rule = Rule(op, what)
        for opt in fields[2:]:
            key, _, value = opt.partition("=")
            try:
                if key == "after":
                    rule.after = int(value)
                elif key == "times":
                    rule.times = None if value == "inf" else int(value)
                elif key == "ms":
                    rule.ms = int(value)
                elif key == "match":
                    rule.match = os.fsencode(value)
                elif key == "file" and value:
                    rule.file = value
                else:
                    raise ValueError
            except ValueError:
                raise UsageError(f"{ENV}: bad option {opt!r} in {text!r}") from None
        if (what == HOLD) != bool(rule.file):
            raise UsageError(f"{ENV}: 'hold' needs file=PATH, and only 'hold' takes it ({text!r})")
        rules.append(rule)
    return rules


def configure(spec: str | None = None) -> None:
    """Load the rules from `spec` (default: the ESCP_FAULT variable); UsageError when malformed."""
    global ACTIVE
    text = os.environ.get(ENV, "") if spec is None else spec
    rules = parse(text)
    with _lock:
        _rules[:] = rules
        ACTIVE = bool(rules)


def inject(op: str, name: bytes = b"") -> str | None:
    """Consult the rules for one call: raises the configured OSError, returns "short", or None
    (after sleeping, for `delay`, or waiting for the gate file, for `hold`)."""
    wait: Rule | None = None
    with _lock:
        for rule in _rules:
            if rule.op == op and rule.fires(name):
                if rule.what in (DELAY, HOLD):
                    wait = rule
                    break
                if rule.what == SHORT:
                    return SHORT
                code = getattr(errno, rule.what)
                if code == errno.EINTR:
                    raise InterruptedError(code, os.strerror(code))
                raise OSError(code, os.strerror(code), os.fsdecode(name) if name else None)
    if wait is not None and wait.what == DELAY:
        time.sleep((DELAY_MS if wait.ms is None else wait.ms) / 1000)
    elif wait is not None:
        end = time.monotonic() + (HOLD_MS if wait.ms is None else wait.ms) / 1000
        while not os.path.exists(wait.file) and time.monotonic() < end:
            time.sleep(HOLD_POLL)
    return None
