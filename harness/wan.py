"""The emulated WAN path of a scenario: start it, tell the tools where to connect, account for
what crossed it.

`open_path(options, sshd)` starts a PathEmulator (harness/pathemu.py) with two routes: "data"
relays to the port escp's receiver (or the limit loop's) will listen on, "ssh" relays to the
private sshd, so an ssh session (escp's own, scp's, rsync's) crosses the same path as the data:
its handshake pays the round trips, its bytes share the window and the bottleneck. With
`tbf = true` and root, the bottleneck is tc tbf in a network namespace on the data route instead
of the emulator's user-space link (harness/netns.py): the receiver then listens on the
namespace link's host address (escp --bind). Without root the user-space link is used, and the
note says so.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness import netns
from harness.pathemu import PathEmulator, PathSpec
from harness.peers import PathPorts
from harness.scenarios import PathOptions
from harness.sshd import PrivateSshd

DATA, SSH = "data", "ssh"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class WanPath:
    spec: PathSpec  # what the path is (the bottleneck is the user-space link's or tbf's)
    ports: PathPorts
    emulator: PathEmulator
    notes: list[str] = field(default_factory=list)
    kernel_rate: float | None = None  # tbf's rate when the kernel shapes the data route

    def describe(self) -> str:
        where = "tc tbf in a network namespace" if self.kernel_rate else "the emulator's user-space link"
        return f"{self.spec.describe()}; bottleneck enforced by {where}"

    def run_accounting(self) -> dict[str, Any]:
        """What crossed the path (sender -> receiver) since the last call, per route."""
        out = {route: self.emulator.summary(route) for route in (DATA, SSH)}
        self.emulator.reset_accounting()
        return out


@contextmanager
def open_path(options: PathOptions, sshd: PrivateSshd | None) -> Iterator[WanPath]:
    with ExitStack() as stack:
        notes: list[str] = []
        ns: netns.TbfNamespace | None = None
        if options.tbf and options.bottleneck:
            reason = netns.unavailable_reason()
            if reason is None:
                ns = stack.enter_context(netns.TbfNamespace(options.spec().rate_bytes_per_s or 0))
            else:
                notes.append(f"tbf requested but unavailable ({reason}): the user-space link is the bottleneck")
        spec = options.spec(user_space_rate=ns is None)
        emulator = stack.enter_context(PathEmulator(spec, connector=ns.connect if ns else None))
        host = ns.host_address if ns else "127.0.0.1"
        receiver_port = free_port(host)
        data_port = emulator.add_route((host, receiver_port), DATA)
        ssh_port = emulator.add_route(("127.0.0.1", sshd.port), SSH) if sshd is not None else None
        ports = PathPorts(data=("127.0.0.1", data_port), receiver_port=receiver_port, ssh_port=ssh_port,
                          bind=host if ns else None)
        full = options.spec()
        yield WanPath(full, ports, emulator, notes, kernel_rate=full.rate_bytes_per_s if ns else None)
