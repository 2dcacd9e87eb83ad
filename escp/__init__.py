"""escp: high-speed, verified, scp-like file transfer over parallel AES-GCM streams.

Public API:
    escp.transfer(sources, dest, config) -> TransferResult
    escp.TransferConfig, escp.SshOptions, escp.RemoteTarget, escp.parse_target
    the exception tree in escp.errors
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import SshOptions, TransferConfig
from .errors import EscpError
from .target import RemoteTarget, parse_target

if TYPE_CHECKING:
    from .api import transfer
    from .results import TransferResult

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # imported on first use: the receiver (`escp --server`) never loads the sender's modules,
    # and the sender starts its receiver before it loads them (see api.transfer)
    if name == "transfer":
        from .api import transfer

        return transfer
    if name == "TransferResult":
        from .results import TransferResult

        return TransferResult
    raise AttributeError(f"module 'escp' has no attribute {name!r}")

__all__ = ["transfer", "TransferConfig", "SshOptions", "TransferResult", "RemoteTarget", "parse_target",
           "EscpError", "__version__"]
