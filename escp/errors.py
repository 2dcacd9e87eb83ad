"""The one exception tree of escp and the process exit codes.

Every error a user can see is an EscpError subclass. Each carries a cause class
(usage, integrity, protocol, io, timeout, auth, connection) that is printed on the
one-line error message, and an exit code. Messages name the file (escaped) when
there is one. Tracebacks are never shown for these errors.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # the transfer as a whole failed (session error, every file failed)
EXIT_USAGE = 2  # bad command line or configuration; nothing was sent
EXIT_PARTIAL = 3  # the session completed but some files failed


def escape_name(name: str | bytes) -> str:
    """Render a file name or peer string safe for a terminal or log line.

    Control characters (C0, DEL, C1 such as CSI 0x9b), backslashes and undecodable
    bytes are shown as escapes, so a hostile name cannot move the cursor or hide text.
    """
    if isinstance(name, bytes):
        name = name.decode("utf-8", "surrogateescape")
    out = []
    for ch in name:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # undecodable byte carried by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch == "\\":
            out.append("\\\\")
        elif code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}.get(ch, f"\\x{code:02x}"))
        else:
            out.append(ch)
    return "".join(out)


class EscpError(Exception):
    """Base of every expected escp failure."""

    cause = "error"
    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, path: str | bytes | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def one_line(self) -> str:
        where = f"{escape_name(self.path)}: " if self.path is not None else ""
        return f"escp: {self.cause} error: {where}{escape_name(self.message)}"


class UsageError(EscpError):
    cause = "usage"
    exit_code = EXIT_USAGE


class ProtocolError(EscpError):
    """The peer sent something that does not follow the protocol."""

    cause = "protocol"


class IntegrityError(EscpError):
    """Authentication of a frame failed, a stream was truncated, or a digest mismatched."""

    cause = "integrity"


class AuthError(EscpError):
    """A connection did not prove knowledge of the session key."""

    cause = "auth"


class TransferIOError(EscpError):
    """A local file could not be read or written."""

    cause = "I/O"


class TimeoutError_(EscpError):
    """No progress within a deadline."""

    cause = "timeout"


class ConnectionFailure(EscpError):
    """ssh, the remote escp or a TCP stream could not be started or went away."""

    cause = "connection"


class OutOfMemory(EscpError):
    """An allocation failed (MemoryError, e.g. under a low RLIMIT_AS)."""

    cause = "memory"


__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_PARTIAL",
    "escape_name",
    "EscpError",
    "UsageError",
    "ProtocolError",
    "IntegrityError",
    "AuthError",
    "TransferIOError",
    "TimeoutError_",
    "ConnectionFailure",
    "OutOfMemory",
]
