"""A kernel bottleneck for the path emulator: `tc tbf` on a veth pair into a network namespace.

This machine has no netem or fq qdisc, but root can create a network namespace and put a token
bucket filter (tbf) on an interface inside it. TbfNamespace makes one:

    root namespace  <host address>/30 on veth "<n>a"  <-->  veth "<n>b" <peer address>/30  namespace
                                                              egress: tbf rate R

`connect(addr)` opens a TCP connection from inside the namespace (a short-lived thread joins it
with setns(2); the socket keeps its namespace), so its bytes leave through the shaped interface
towards the root namespace. The path emulator (harness/pathemu.py) uses it as its connector: its
upstream connections then cross tbf, and the receiver listens on `host_address` (escp --bind).
Unlike the user-space link, tbf drops what exceeds its queue, so TCP's own congestion control
takes part. Needs root, `ip` and `tc`; `unavailable_reason()` says why not.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import shutil
import socket
import subprocess
import threading
from types import TracebackType

CLONE_NEWNET = 0x40000000
TBF_LATENCY = "50ms"  # how long a packet may queue in tbf before it is dropped
MIN_BURST = 64 * 1024  # bytes the bucket may send at once (at least one 64 KiB TSO segment)
BURST_S = 0.004  # ... or this many seconds at the rate, whichever is larger


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root (tc tbf in a network namespace needs root)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    return None


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class TbfNamespace:
    """A namespace behind a veth pair whose egress towards the root namespace is shaped to
    rate_bytes_per_s. Context manager; everything it creates goes when it stops."""

    _seq = itertools.count()

    def __init__(self, rate_bytes_per_s: float) -> None:
        self.rate = rate_bytes_per_s
        pid, seq = os.getpid() % 10**6, next(self._seq) % 10
        self.name = f"escp-pe-{pid}-{seq}"
        self.veth = (f"pe{pid}{seq}a", f"pe{pid}{seq}b")  # at most 15 characters
        subnet = (pid * 10 + seq) % (250 * 64)  # a /30 in 10.223.0.0/16 per process and instance
        prefix, last = f"10.223.{subnet // 64}", (subnet % 64) * 4
        self.host_address = f"{prefix}.{last + 1}"
        self.peer_address = f"{prefix}.{last + 2}"
        self._created = False

    def start(self) -> TbfNamespace:
        reason = unavailable_reason()
        if reason:
            raise OSError(reason)
        host, peer = self.veth
        _ip("netns", "add", self.name)
        self._created = True
        try:
            _ip("link", "add", host, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", self.name)
            _ip("addr", "add", f"{self.host_address}/30", "dev", host)
            _ip("link", "set", host, "up")
            _ip("-n", self.name, "addr", "add", f"{self.peer_address}/30", "dev", peer)
            _ip("-n", self.name, "link", "set", peer, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
            burst = max(MIN_BURST, int(self.rate * BURST_S))
            r = subprocess.run(
                ["tc", "-n", self.name, "qdisc", "add", "dev", peer, "root", "tbf", "rate",
                 f"{int(self.rate * 8)}bit", "burst", str(burst), "latency", TBF_LATENCY],
                capture_output=True, text=True, timeout=10)
            if r.returncode != 0:
                raise OSError(f"tc tbf: {r.stderr.strip()}")
        except OSError:
            self.stop()
            raise
        return self

    def connect(self, address: tuple[str, int]) -> socket.socket:
        """A TCP connection to address opened from inside the namespace."""
        out: list[socket.socket | BaseException] = []

        def inside() -> None:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                with open(f"/run/netns/{self.name}") as ns:
                    if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                out.append(socket.create_connection(address, timeout=10))
            except BaseException as exc:  # handed to the caller's thread
                out.append(exc)

        t = threading.Thread(target=inside, name="netns-connect")
        t.start()
        t.join()
        result = out[0]
        if isinstance(result, BaseException):
            raise OSError(f"connect from {self.name} to {address}: {result}")
        return result

    def stop(self) -> None:
        if self._created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True, timeout=10)
            subprocess.run(["ip", "link", "del", self.veth[0]], capture_output=True, timeout=10)
            self._created = False

    def __enter__(self) -> TbfNamespace:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
