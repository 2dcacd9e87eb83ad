"""Wire constants and fixed-layout codecs of the escp protocol (version 1).

Everything here is pure: struct layouts, frame type numbers, limits. The normative
description is docs/protocol.md; keep the two in step.
"""

from __future__ import annotations

import struct

PROTOCOL_VERSION = 1

# --- bootstrap over the ssh pipe -------------------------------------------------
BOOT_MAGIC = b"ESCP"
BOOT_HEADER = struct.Struct("<4sBBHI")  # magic, version, type, reserved, body length
BOOT_SESSION_INIT = 1
BOOT_SESSION_REPLY = 2
BOOT_SESSION_REPORT = 3  # server -> initiator at the session's end, when SessionInit.report asked
BOOT_SETUP_PROGRESS = 4  # server -> initiator before the reply, only when the initiator reads it
BOOT_MAX_BODY = 1 << 20

# SessionInit.setup_features: what the initiator reads before the SessionReply (offers, not demands)
SETUP_PROGRESS = 1 << 0  # SetupProgress messages (docs/protocol.md §2.11)
# SetupProgress.stage
STAGE_PORT_WAIT = 1  # every port of the range is busy: waiting for one

# Session_Init flag bits
FLAG_COMPRESS = 1 << 0
FLAG_SPARSE = 1 << 1
FLAG_PRESERVE = 1 << 2
FLAG_NO_CHECKSUM = 1 << 3
FLAG_NO_DIRECT = 1 << 4
FLAG_TRACE = 1 << 5
FLAG_VERBOSE = 1 << 6
FLAG_RECURSIVE = 1 << 7
FLAG_FSYNC = 1 << 8
FLAG_TOP_DIR = 1 << 9  # the single top-level source is a directory (scp rename rule)
FLAG_TRACE_EVENTS = 1 << 10  # with FLAG_TRACE: also send the span log, not only totals
FLAG_DEST_DIR = 1 << 11  # the destination must be an existing directory (--filelist)
FLAG_SKIP_QUICK = 1 << 12  # --skip-existing=quick: files gated, the receiver skips same size and mtime
FLAG_SKIP_DIGEST = 1 << 13  # --skip-existing=digest: files gated, the receiver skips same content digest
FLAG_RESUME = 1 << 14  # --resume: files gated, the receiver offers the verified ranges of an earlier try
FLAG_KNOWN = (1 << 15) - 1

# --- stream handshake --------------------------------------------------------------
CHALLENGE_LEN = 32
HELLO = struct.Struct("<4sHH32s")  # magic b"ESCH", version, stream index, proof (HMAC-SHA256)
HELLO_MAGIC = b"ESCH"
META_STREAM = 0  # stream index of the metadata connection; data streams are 1..T
MAX_STREAMS = 64

# --- frames ------------------------------------------------------------------------
LEN_PREFIX = struct.Struct("<I")  # length of ciphertext+tag; also the frame's AAD
TAG_LEN = 16
NONCE_LEN = 12
MIN_BLOCK = 256 * 1024
MAX_BLOCK = 64 * 1024 * 1024
DEFAULT_BLOCK = 1024 * 1024
META_MAX_PLAINTEXT = 1 << 20  # a metadata frame's plaintext is at most 1 MiB
DEFAULT_REKEY_BYTES = 1 << 36  # retire a key after 64 GiB of ciphertext
MIN_REKEY_BYTES = 1 << 12  # tests use 64 KiB; below 4 KiB is refused
MAX_COUNTER = (1 << 62) - 1

# frame types (first plaintext byte)
T_DATA = 1
T_EOS = 2
T_ACCEPT = 3
T_FILE_LIST = 10
T_FILE_END = 11
T_FILE_RESULT = 12
T_SESSION_END = 13
T_SESSION_DONE = 14
T_KEEPALIVE = 15
T_ABORT = 16
T_TRACE_CHUNK = 17  # receiver -> sender before SESSION_DONE: a slice of its trace JSON
T_FILE_WANT = 18  # receiver -> sender in a gated session: send this file's data (§9.14)
T_FILE_SUM = 19  # sender -> receiver with --skip-existing=digest: a file's content digest (§9.14)
TRACE_CHUNK_MAX = 512 * 1024
TRACE_TOTAL_MAX = 64 * 1024 * 1024

DATA_HDR = struct.Struct("<BBHIQI")  # type, flags, reserved, fino, offset, raw length
DATA_FLAG_ZSTD = 1
EOS_BODY = struct.Struct("<BQQ")  # type, data frames sent, raw bytes sent
ACCEPT_BODY = struct.Struct("<BH")  # type, stream index
FILE_END_BODY = struct.Struct("<BIBQ16s")  # type, fino, status, blocks sent, digest; then utf-8 message
FILE_RESULT_BODY = struct.Struct("<BIBB16s")  # type, fino, status, cause, digest; then utf-8 message
SESSION_END_BODY = struct.Struct("<BI")  # type, number of entries announced
ABORT_BODY = struct.Struct("<BB")  # type, cause; then utf-8 message
FILE_WANT_BODY = struct.Struct("<BI")  # type, fino; then KEPT_RANGE * n (--resume)
KEPT_RANGE = struct.Struct("<QQ16s")  # offset, length, range digest (checksum.range_digest)
MAX_KEPT_RANGES = 1024  # ranges one FILE_WANT may offer
FILE_SUM_BODY = struct.Struct("<BI16s")  # type, fino, content digest (checksum.content_digest)
MAX_MESSAGE = 4096  # error strings are cut to this many bytes

DIGEST_LEN = 16  # per-file digests in FILE_END and FILE_RESULT
NO_DIGEST = bytes(DIGEST_LEN)  # the digest field without checksums (--nochecksum, failures)

STATUS_OK = 0
STATUS_FAILED = 1
STATUS_SKIPPED = 2  # FILE_RESULT only: the receiver already has the file (gated sessions, §9.14)

# cause codes carried by FILE_RESULT and ABORT
CAUSES = ("error", "integrity", "protocol", "I/O", "timeout", "auth", "connection", "usage", "memory")

# file kinds in a FileList entry
KIND_FILE = 0
KIND_DIR = 1

MAX_FILES_PER_LIST = 65536
MAX_NAME = 4096
MAX_FILES = 1 << 31


def max_frame_len(block_size: int) -> int:
    """Largest legal L (ciphertext+tag) on a stream negotiated with block_size."""
    return max(block_size + DATA_HDR.size, META_MAX_PLAINTEXT) + TAG_LEN


def cause_code(cause: str) -> int:
    return CAUSES.index(cause) if cause in CAUSES else 0


def cause_name(code: int) -> str:
    return CAUSES[code] if 0 <= code < len(CAUSES) else "error"
