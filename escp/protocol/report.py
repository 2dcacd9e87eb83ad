"""SessionReport: what a server says about its session once it has ended (pure codec).

Bootstrap message type 3 (docs/protocol.md §2.8), written by the server on its stdout
after the session, only when SessionInit.report asked for it: in every pairing but
version 1's push. It carries what the initiator cannot learn from its own session: the
server's counts, its error line, the problems it saw (sources it could not send, and, for
a sending server, each file's failure with the server's own path) and its trace. A
remote-to-remote initiator, which runs no data session of its own, learns everything
from the two reports.

The report comes from the peer: decoders bound every count and string and raise only
ProtocolError.
"""

from __future__ import annotations

from dataclasses import dataclass

import flatbuffers

from ..errors import ProtocolError
from .bootstrap import fb_tables, fb_text, frame
from .fb import escp_generated as fb
from .messages import fb_bytes, fb_root, fb_table_vector
from .wire import BOOT_SESSION_REPORT, MAX_MESSAGE, MAX_NAME, TRACE_TOTAL_MAX

MAX_PROBLEMS = 1000  # problems listed in one report; the rest are only counted


@dataclass(frozen=True, slots=True)
class Problem:
    """One failure or warning, named by the server's own path."""

    path: bytes
    cause: str
    message: str
    warning: bool = False  # skipped (a special file, a symlink inside a tree), not failed
    sent: bool = False  # announced and then failed (a transfer failure), not a source problem


@dataclass(frozen=True)
class SessionReport:
    files_ok: int = 0
    files_failed: int = 0
    nbytes: int = 0  # payload bytes of the files that arrived intact
    error: str = ""  # the session's one-line error; "" when it completed
    error_cause: str = ""
    problems: tuple[Problem, ...] = ()
    problems_dropped: int = 0
    trace_json: bytes = b""
    files_skipped: int = 0  # of files_ok: the destination already had them (--skip-existing)
    bytes_skipped: int = 0  # their sizes: bytes not sent
    files_resumed: int = 0  # files continued from an interrupted copy (--resume)
    bytes_resumed: int = 0  # the bytes they kept: not sent again


def encode_report(r: SessionReport) -> bytes:
    problems = r.problems[:MAX_PROBLEMS]
    b = flatbuffers.Builder(1024 + len(r.trace_json) + sum(len(p.path) + len(p.message) + 64 for p in problems))
    tables = []
    for p in problems:
        path = b.CreateByteVector(p.path[:MAX_NAME])
        cause = b.CreateString(p.cause[:64])
        message = b.CreateString(p.message.encode("utf-8", "replace")[:MAX_MESSAGE].decode("utf-8", "ignore"))
        fb.ProblemStart(b)
        fb.ProblemAddPath(b, path)
        fb.ProblemAddCause(b, cause)
        fb.ProblemAddMessage(b, message)
        fb.ProblemAddWarning(b, p.warning)
        fb.ProblemAddSent(b, p.sent)
        tables.append(fb.ProblemEnd(b))
    vec = fb_table_vector(b, fb.SessionReportStartProblemsVector, tables)
    trace = b.CreateByteVector(r.trace_json if len(r.trace_json) <= TRACE_TOTAL_MAX else b"")
    error = b.CreateString(r.error[:2000])
    cause = b.CreateString(r.error_cause[:64])
    fb.SessionReportStart(b)
    fb.SessionReportAddFilesOk(b, r.files_ok)
    fb.SessionReportAddFilesFailed(b, r.files_failed)
    fb.SessionReportAddBytes(b, r.nbytes)
    fb.SessionReportAddError(b, error)
    fb.SessionReportAddErrorCause(b, cause)
    fb.SessionReportAddProblems(b, vec)
    fb.SessionReportAddProblemsDropped(b, r.problems_dropped + len(r.problems) - len(problems))
    fb.SessionReportAddTraceJson(b, trace)
    fb.SessionReportAddFilesSkipped(b, r.files_skipped)
    fb.SessionReportAddBytesSkipped(b, r.bytes_skipped)
    fb.SessionReportAddFilesResumed(b, r.files_resumed)
    fb.SessionReportAddBytesResumed(b, r.bytes_resumed)
    b.Finish(fb.SessionReportEnd(b))
    return frame(BOOT_SESSION_REPORT, bytes(b.Output()))


def decode_report(body: bytes) -> SessionReport:
    try:
        r = fb_root(fb.SessionReport, body)
        tables = fb_tables(r, "Problems", body)
        if len(tables) > MAX_PROBLEMS:
            raise ProtocolError(f"report lists {len(tables)} problems")
        problems = tuple(
            Problem(fb_bytes(t, 4, body)[:MAX_NAME], fb_text(t.Cause())[:64], fb_text(t.Message()), bool(t.Warning()),
                    bool(t.Sent()))
            for t in tables
        )
        trace = fb_bytes(r, 18, body)
        if len(trace) > TRACE_TOTAL_MAX:
            raise ProtocolError("report trace exceeds its size limit")
        return SessionReport(
            files_ok=r.FilesOk(),  # type: ignore[attr-defined]
            files_failed=r.FilesFailed(),  # type: ignore[attr-defined]
            nbytes=r.Bytes(),  # type: ignore[attr-defined]
            error=fb_text(r.Error()),  # type: ignore[attr-defined]
            error_cause=fb_text(r.ErrorCause())[:64],  # type: ignore[attr-defined]
            problems=problems,
            problems_dropped=r.ProblemsDropped(),  # type: ignore[attr-defined]
            trace_json=trace,
            files_skipped=r.FilesSkipped(),  # type: ignore[attr-defined]
            bytes_skipped=r.BytesSkipped(),  # type: ignore[attr-defined]
            files_resumed=r.FilesResumed(),  # type: ignore[attr-defined]
            bytes_resumed=r.BytesResumed(),  # type: ignore[attr-defined]
        )
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"malformed SessionReport ({type(exc).__name__})") from None
