"""Session_Init flag bits <-> a frozen dataclass of booleans (the codec of §2.4).

On the wire the flags are one u32 (`SessionInit.flags`); everywhere else escp reads them
as `SessionFlags` fields, so no adapter tests or sets a bit by hand. Bits outside
FLAG_KNOWN are refused by `SessionInit.validate`, before anything decodes them here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .wire import (
    FLAG_COMPRESS,
    FLAG_DEST_DIR,
    FLAG_FSYNC,
    FLAG_NO_CHECKSUM,
    FLAG_NO_DIRECT,
    FLAG_PRESERVE,
    FLAG_RECURSIVE,
    FLAG_RESUME,
    FLAG_SKIP_DIGEST,
    FLAG_SKIP_QUICK,
    FLAG_SPARSE,
    FLAG_TOP_DIR,
    FLAG_TRACE,
    FLAG_TRACE_EVENTS,
    FLAG_VERBOSE,
)

# field name -> bit: the fields of SessionFlags, in bit order (tests/unit/test_codecs.py pins it)
BITS = {
    "compress": FLAG_COMPRESS,
    "sparse": FLAG_SPARSE,
    "preserve": FLAG_PRESERVE,
    "no_checksum": FLAG_NO_CHECKSUM,
    "no_direct": FLAG_NO_DIRECT,
    "trace": FLAG_TRACE,
    "verbose": FLAG_VERBOSE,
    "recursive": FLAG_RECURSIVE,
    "fsync": FLAG_FSYNC,
    "top_dir": FLAG_TOP_DIR,
    "trace_events": FLAG_TRACE_EVENTS,
    "dest_dir": FLAG_DEST_DIR,
    "skip_quick": FLAG_SKIP_QUICK,
    "skip_digest": FLAG_SKIP_DIGEST,
    "resume": FLAG_RESUME,
}


@dataclass(frozen=True, slots=True)
class SessionFlags:
    """The session's switches, one boolean per flag bit (docs/protocol.md §2.4)."""

    compress: bool = False  # DATA frames may carry zstd payloads
    sparse: bool = False  # FILE_END may count fewer blocks; only non-zero pages are written
    preserve: bool = False  # apply modes, times (and owners as root)
    no_checksum: bool = False  # no digests on either side
    no_direct: bool = False  # the sender never reads with O_DIRECT (no effect on the receiver)
    trace: bool = False  # the receiver records a trace and sends it before SESSION_DONE
    verbose: bool = False  # the receiver logs at debug level
    recursive: bool = False  # -r (no effect on the receiver)
    fsync: bool = False  # fsync files and directories before reporting success
    top_dir: bool = False  # the single top-level source is a directory (scp rename rule)
    trace_events: bool = False  # with trace: the span log too, not only totals
    dest_dir: bool = False  # the destination must be an existing directory (--filelist)
    skip_quick: bool = False  # --skip-existing=quick: the receiver skips files of the same size and mtime
    skip_digest: bool = False  # --skip-existing=digest: ... of the same content digest (FILE_SUM)
    resume: bool = False  # --resume: FILE_WANT offers the verified ranges of an interrupted copy

    @property
    def gated(self) -> bool:
        """A regular file's data waits for the receiver's FILE_WANT (or its skip) (§9.14)."""
        return self.skip_quick or self.skip_digest or self.resume

    @property
    def checksum(self) -> bool:
        return not self.no_checksum

    def to_bits(self) -> int:
        return sum(bit for name, bit in BITS.items() if getattr(self, name))

    @classmethod
    def from_bits(cls, bits: int) -> SessionFlags:
        return cls(**{name: bool(bits & bit) for name, bit in BITS.items()})

