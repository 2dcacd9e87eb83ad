"""escp: high-speed, verified, scp-like file transfer over parallel AES-GCM streams.

Public API:
    escp.transfer(sources, dest, config) -> TransferResult
    escp.TransferConfig, escp.SshOptions, escp.RemoteTarget, escp.parse_target
    the exception tree in escp.errors
"""

from .api import transfer
from .config import SshOptions, TransferConfig
from .errors import EscpError
from .net.sender import TransferResult
from .target import RemoteTarget, parse_target

__version__ = "0.1.0"

__all__ = ["transfer", "TransferConfig", "SshOptions", "TransferResult", "RemoteTarget", "parse_target",
           "EscpError", "__version__"]
