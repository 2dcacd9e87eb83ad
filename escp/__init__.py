"""escp: high-speed, verified, scp-like file transfer over parallel AES-GCM streams.

The public API is what this module exports (pinned by tests/unit/test_exports.py):
    escp.transfer(sources, dest, config) -> TransferResult   run one transfer
    TransferConfig, SshOptions                                how (frozen, validated)
    RemoteTarget, parse_target                                where ([user@]host:path)
    TransferResult, FileOutcome                               what happened, per file
    EscpError (and the tree in escp.errors)                   what went wrong, with exit codes

Layout (everything below is implementation, imported by path only in tests):
    escp/protocol/  sans-IO: codecs, key schedule, handshake, per-role session cores
    escp/engine/    the per-block stages and their pipeline, the scheduler, the files
    escp/net/       sockets, threads and bootstrap: initiator, server, streams, sessions
    escp/trace/     the per-stage tracer, its exports and the verdict
    escp/cli.py     the command line; escp/results.py the result and the user's error lines
"""

from .api import transfer
from .config import SshOptions, TransferConfig
from .errors import EscpError
from .results import FileOutcome, TransferResult
from .target import RemoteTarget, parse_target

__version__ = "0.1.0"

__all__ = ["transfer", "TransferConfig", "SshOptions", "TransferResult", "FileOutcome", "RemoteTarget",
           "parse_target", "EscpError", "__version__"]
