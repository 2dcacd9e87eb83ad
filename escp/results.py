"""What a transfer reports: the public TransferResult, each file's outcome, and the
per-file error lines the user sees on stderr.

The cores decide how each file ended (escp/protocol); this module only records it and
says it: a failed file is always printed, -q or not (scp -q hides noise, never errors);
a warning (a skipped special file or symlink) is hidden by -q.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

from .errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EscpError
from .protocol.report import MAX_PROBLEMS, Problem

MAX_OUTCOMES = 10_000  # per-file outcomes kept for the --json report


@dataclass
class FileOutcome:
    name: str
    ok: bool
    cause: str = ""
    message: str = ""
    size: int = 0
    path: str = ""  # local source path (name is the destination-relative name in outcomes)
    skipped: bool = False  # ok, and not sent: the destination already had it (--skip-existing)
    resumed: int = 0  # bytes an earlier, interrupted copy had verified and that were not sent again (--resume)


@dataclass(frozen=True)
class ProgressSnapshot:
    """Where a running transfer stands, for a progress display (SendSession.snapshot).

    The sender learns the totals as its walk goes: `bytes_known`/`files_known` grow until
    `walk_done`, and only then are they the totals."""

    bytes_done: int  # data bytes sent (or skipped: holes, files the destination had) so far
    bytes_known: int  # sizes of the regular files found so far
    files_done: int  # regular files with an outcome (copied or failed)
    files_known: int  # regular files found so far (failed sources included)
    walk_done: bool  # every source was walked: the known figures are the totals
    current: bytes  # the file being sent (its local path) or received (its destination name) most recently


@dataclass
class TransferResult:
    files_ok: int = 0  # copied or skipped
    files_failed: int = 0
    files_skipped: int = 0  # of files_ok: the destination already had them, nothing was sent
    bytes_skipped: int = 0  # their sizes: bytes not sent
    files_resumed: int = 0  # files copied in part: what an interrupted copy verified was kept (--resume)
    bytes_resumed: int = 0  # the bytes kept: not sent again
    bytes_sent: int = 0
    bytes_payload: int = 0  # sizes of the files copied (not skipped)
    seconds: float = 0.0
    failures: list[FileOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: EscpError | None = None
    traces: dict[str, Any] = field(default_factory=dict)  # the other sides' traces, by role (sender, receiver)
    hosts: dict[str, str] = field(default_factory=dict)  # which host played each role, for the trace and verdict
    clock_offset_ns: int = 0  # receiver clock + offset = sender clock (estimated at set-up)
    stats: object = None  # escp.trace.summary.TraceSummary when traced
    trace_written: bool = False
    outcomes: list[FileOutcome] = field(default_factory=list)  # every file, the first MAX_OUTCOMES
    outcomes_dropped: int = 0  # outcomes beyond MAX_OUTCOMES (counted in files_ok/files_failed)

    @property
    def exit_code(self) -> int:
        """The command line's exit status for this result: 0 every file copied, 1 the transfer
        failed (or every file did), 2 a usage error, 3 some files failed."""
        if self.error is not None:
            return self.error.exit_code
        if self.files_failed:
            return EXIT_PARTIAL if self.files_ok else EXIT_FAILURE
        return EXIT_OK

    def record(self, outcome: FileOutcome) -> None:
        if len(self.outcomes) < MAX_OUTCOMES:
            self.outcomes.append(outcome)
        else:
            self.outcomes_dropped += 1


class Report:
    """Fills a TransferResult as files end, and prints what the user must see."""

    def __init__(self, quiet: bool, out: TextIO | None = None, silent: bool = False) -> None:
        self.result = TransferResult()
        self.quiet = quiet
        self.out = out
        self.silent = silent  # print nothing: a server's problems travel in its SessionReport
        self.problems: list[Problem] = []  # failures and warnings by path, for a server's SessionReport
        self.problems_dropped = 0
        self._failed_dirs: set[bytes] = set()  # destination names of directories that failed

    def _problem(self, p: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(p)
        else:
            self.problems_dropped += 1

    def _print(self, line: str) -> None:
        if self.silent:
            return
        print(line, file=self.out if self.out is not None else sys.stderr)

    def source_problem(self, error: EscpError, warning: bool) -> None:
        """A source that is not sent: a failed file, or (warning) a skipped one."""
        r = self.result
        self._problem(Problem(os.fsencode(error.path or b""), error.cause, error.message, warning))
        if warning:
            r.warnings.append(error.one_line())
        else:
            r.files_failed += 1
            path = os.fsdecode(error.path or b"")
            r.failures.append(FileOutcome(path, False, error.cause, error.message))
            r.record(FileOutcome("", False, error.cause, error.message, 0, path))
        if not (self.quiet and warning):
            self._print(error.one_line())

    def file_done(self, path: bytes, dest_name: bytes, size: int, is_dir: bool, ok: bool, cause: str,
                  message: str, shown: bytes | None = None, skipped: bool = False, resumed: int = 0) -> None:
        """A file or directory the receiver reported on: how it ended (the core's verdict).
        `shown` is the path its error line names (where it failed; default: the source).
        What fails inside a directory that failed is counted and listed, not printed: one
        cause, one line (the directory's). A `skipped` file is ok and was not sent; of a
        `resumed` file that many bytes were kept from an earlier try, not sent again."""
        r = self.result
        name = os.fsdecode(path)
        if not is_dir:
            r.record(FileOutcome(os.fsdecode(dest_name), ok, cause, message, size, name, skipped, resumed))
        if ok:
            if is_dir:
                return
            r.files_ok += 1
            if skipped:
                r.files_skipped += 1
                r.bytes_skipped += size
            else:
                r.bytes_payload += size
            if resumed:
                r.files_resumed += 1
                r.bytes_resumed += resumed
            return
        r.files_failed += 1
        r.failures.append(FileOutcome(name, False, cause, message, size))
        inside = self._inside_failed_dir(dest_name)
        if is_dir:
            self._failed_dirs.add(dest_name)
        if inside:
            return
        shown_path = path if shown is None else shown
        self._problem(Problem(shown_path, cause, message, sent=True))
        err = EscpError(message, path=shown_path)
        err.cause = cause
        self._print(err.one_line())

    def _inside_failed_dir(self, dest_name: bytes) -> bool:
        parts = dest_name.split(b"/")
        return any(b"/".join(parts[:i]) in self._failed_dirs for i in range(1, len(parts)))
