"""Frozen, validated configuration of a transfer (built by the CLI or the public API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .engine.pacing import slowest_rate
from .errors import UsageError
from .protocol.wire import (
    DEFAULT_BLOCK,
    DEFAULT_REKEY_BYTES,
    MAX_BLOCK,
    MAX_STREAMS,
    MIN_BLOCK,
    MIN_REKEY_BYTES,
)
from .units import format_rate

if TYPE_CHECKING:
    from .engine.filelist import ListEntry

ENGINES = ("posix", "dummy")
SKIP_MODES = ("quick", "digest")  # --skip-existing: same size and mtime, or same content digest


@dataclass(frozen=True)
class SshOptions:
    """How the sender starts the remote receiver."""

    program: str = "ssh"
    port: int | None = None
    identity: str | None = None
    options: tuple[str, ...] = ()
    config_file: str | None = None
    jump: str | None = None
    cipher: str | None = None
    forward_agent: bool = False
    ip_version: int | None = None  # 4 or 6
    remote_escp: str = "escp"

    def __post_init__(self) -> None:
        if self.port is not None and not 1 <= self.port <= 65535:
            raise UsageError(f"ssh port {self.port} out of range 1-65535")
        if self.ip_version not in (None, 4, 6):
            raise UsageError("ip version must be 4 or 6")


@dataclass(frozen=True)
class TransferConfig:
    """Everything that shapes one transfer; validated on construction."""

    streams: int = 4
    block_size: int = DEFAULT_BLOCK
    recursive: bool = False
    compress: bool = False
    compress_level: int = 3
    sparse: bool = False
    preserve: bool = False
    checksum: bool = True
    direct: str = "auto"  # O_DIRECT reads: auto (files not in the page cache), always, never
    fsync: bool = False
    tx_engine: str = "posix"
    rx_engine: str = "posix"
    port_start: int = 1232
    port_range: int = 10
    bind_address: str = ""
    connect_to: tuple[str, int] | None = None  # connect here instead of the address the receiver reports
    rekey_bytes: int = DEFAULT_REKEY_BYTES
    limit_bytes_per_s: int = 0  # -l: the whole transfer, all streams together; 0 = unlimited
    idle_timeout: float = 60.0
    connect_timeout: float = 30.0
    quiet: bool = False
    verbose: bool = False
    bits: bool = False
    trace_path: str | None = None
    stats: bool = False
    json_path: str | None = None
    log_path: str | None = None
    filelist: tuple[ListEntry, ...] | None = None  # --filelist entries (sources come only from here)
    checksum_file: str | None = None  # --checksum-file: write a manifest of what was sent
    skip_existing: str | None = None  # --skip-existing: "quick" or "digest"; None sends every file
    resume: bool = False  # --resume: keep what an interrupted copy verified, and send only the rest
    cpus: tuple[int, ...] | None = None  # stream workers' CPUs (cpumask of /etc/escp.conf)
    relay: bool = False  # remote to remote: -3 moves the data through this host, -R (default) directly
    ssh: SshOptions = field(default_factory=SshOptions)

    def __post_init__(self) -> None:
        if not 1 <= self.streams <= MAX_STREAMS:
            raise UsageError(f"--parallel {self.streams} out of range 1-{MAX_STREAMS}")
        if not MIN_BLOCK <= self.block_size <= MAX_BLOCK:
            raise UsageError(f"--blocksize {self.block_size} out of range {MIN_BLOCK}-{MAX_BLOCK} bytes")
        if not 1 <= self.compress_level <= 22:
            raise UsageError(f"--compress-level {self.compress_level} out of range 1-22")
        if self.tx_engine not in ENGINES or self.rx_engine not in ENGINES:
            raise UsageError(f"unknown I/O engine (choose from {', '.join(ENGINES)})")
        if not 1 <= self.port_start <= 65535:
            raise UsageError(f"--escp_port {self.port_start} out of range 1-65535")
        if not 1 <= self.port_range <= 1000 or self.port_start + self.port_range - 1 > 65535:
            raise UsageError(f"--escp_portrange {self.port_range} leaves the port range 1-65535")
        if not MIN_REKEY_BYTES <= self.rekey_bytes <= DEFAULT_REKEY_BYTES:
            raise UsageError("rekey limit out of range")
        if self.connect_to is not None and not 1 <= self.connect_to[1] <= 65535:
            raise UsageError("--connect-to port out of range 1-65535")
        if self.checksum_file is not None and not self.checksum:
            raise UsageError("--checksum-file needs checksums (drop --nochecksum)")
        if self.skip_existing is not None and self.skip_existing not in SKIP_MODES:
            raise UsageError(f"--skip-existing={self.skip_existing}: choose {' or '.join(SKIP_MODES)}")
        if self.resume and (not self.checksum or self.sparse):
            raise UsageError("--resume needs checksums and no --sparse (it keeps verified blocks by their digests)")
        if not 0 < self.idle_timeout <= 86400 or not 0 < self.connect_timeout <= 3600:
            raise UsageError("timeouts must be positive")
        slowest = slowest_rate(self.block_size, self.idle_timeout)
        if self.limit_bytes_per_s < 0 or 0 < self.limit_bytes_per_s < slowest:
            raise UsageError(f"-l {format_rate(self.limit_bytes_per_s)} is below {format_rate(slowest)}, the slowest "
                             f"rate that moves a {self.block_size // 1024} KiB block within the {self.idle_timeout:g} s "
                             "idle deadline (lower --blocksize or raise --timeout)")
