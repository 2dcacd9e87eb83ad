"""The tools a scenario compares: escp itself and its peers, and one measured process run.

Each tool turns (source, destination) into an argv: escp (configurable argv prefix plus the
scenario's options; a scenario's `fault` goes into its environment as ESCP_FAULT), escp-dummy
(escp with --ioengine dummy: nothing written, not verified), escp-traced (escp with the recording
tracer on: `--stats --trace`, for the tracer's overhead), escp-local (escp --local where escp
itself goes over ssh: the local peers' like-for-like partner), cp (`cp -r`), rsync (`rsync -a`,
local), limit (harness/limit.py: escp's data loop with nothing around it), and over the private
loopback sshd: scp (default cipher), scp-gcm (`-c aes128-gcm@openssh.com`), rsync-ssh
(`rsync -a -e ssh`).

Routes: every tool has one, named in the report beside every comparison. "ssh" tools start
their far end through the private sshd (escp: `-F cfg -D <this checkout's escp>`); "local"
tools run on this host without ssh (escp: `--local`). escp, escp-dummy and escp-traced take the
route the runner gives them. On an emulated WAN path (`PathPorts`) the data streams of escp and
the limit peer go through the emulator (`--connect-to`), and so does every ssh connection.

`measure()` runs one command and records wall time, CPU user/sys and peak RSS of the process tree
it waited for (os.wait4), plus the server side CPU of ssh tools (sshd's reaped children).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.scenarios import FAULT_ENV, EscpOptions
from harness.sshd import PrivateSshd

REPO = Path(__file__).resolve().parent.parent
SSH_PEERS = {"scp", "scp-gcm", "rsync-ssh"}
ESCP_TOOLS = ("escp", "escp-dummy", "escp-traced", "escp-local")
LOCAL = "local"
SSH = "ssh"
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None


def default_escp_command() -> list[str]:
    return [sys.executable, "-m", "escp", "-q"]


def tool_route(tool: str, escp_route: str) -> str:
    """The route of a tool when escp itself takes `escp_route`."""
    if tool in SSH_PEERS:
        return SSH
    if tool in ESCP_TOOLS and tool != "escp-local":
        return escp_route
    return LOCAL


@dataclass(frozen=True)
class PathPorts:
    """Where the tools of a WAN scenario connect: the path emulator's listening ports."""

    data: tuple[str, int]  # relays to receiver_port (escp's data streams, the limit peer's streams)
    receiver_port: int  # the receiver listens here (escp --escp_port P --escp_portrange 1)
    ssh_port: int | None = None  # relays to the private sshd (None: no sshd)
    bind: str | None = None  # the receiver's listen address when not 127.0.0.1 (a shaped namespace link)


@dataclass
class EscpCommand:
    """How to run escp. `plain` = a stand-in (e.g. `cp -r`): append only SRC DEST, no options."""

    argv: list[str] = field(default_factory=default_escp_command)
    plain: bool = False

    @classmethod
    def from_string(cls, text: str | None, plain: bool = False) -> EscpCommand:
        return cls(shlex.split(text), plain) if text else cls(plain=plain)

    @property
    def local_only(self) -> bool:
        """The command cannot go over ssh (a stand-in, or an argv that says --local itself)."""
        return self.plain or "--local" in self.argv

    def describe(self) -> str:
        return shlex.join(self.argv) + (" (stand-in: options not passed)" if self.plain else "")

    def available(self) -> str | None:
        """None when the command looks runnable, else the reason."""
        if self.plain:
            return None
        try:
            r = subprocess.run(
                self.argv + ["--help"], cwd=REPO, capture_output=True, timeout=60, env=escp_env()
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{shlex.join(self.argv)}: {e}"
        if r.returncode != 0:
            return f"`{shlex.join(self.argv)} --help` exited {r.returncode}: {r.stderr.decode()[-300:]}"
        return None


def escp_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


@dataclass
class Invocation:
    argv: list[str]
    verify: bool = True  # False: the tool writes no data (dummy engine)
    json_report: Path | None = None
    cwd: Path | None = None
    env: dict[str, str] | None = None


def build(
    tool: str,
    src: Path,
    dest: Path,
    *,
    escp: EscpCommand,
    opts: EscpOptions,
    sshd: PrivateSshd | None,
    json_report: Path | None = None,
    extra: list[str] | None = None,
    route: str = LOCAL,
    path: PathPorts | None = None,
    pull: bool = False,
) -> Invocation:
    """The command line that copies `src` (a file or a directory) to the new path `dest`;
    escp, escp-dummy and escp-traced go by `route`, every tool through `path` when given.
    `pull`: the ssh tools fetch `src` from the sshd's host into the local `dest` instead of
    sending it there (the same files: the host is this one)."""
    is_dir = src.is_dir()
    if tool in ESCP_TOOLS:
        if escp.plain:
            return Invocation(escp.argv + [str(src), str(dest)], verify=tool != "escp-dummy")
        argv = list(escp.argv)
        target = str(dest)
        route = tool_route(tool, route)
        if route == SSH:
            if sshd is None:
                raise RuntimeError(f"{tool} over ssh needs the loopback sshd")
            argv += ["-F", str(sshd.client_config), "-D", str(sshd.remote_escp)]
            if path is None:
                argv += ["--escp_port", str(sshd.escp_port), "--escp_portrange", str(sshd.ESCP_PORTS)]
            elif path.ssh_port is not None:
                argv += ["-P", str(path.ssh_port)]
            target = f"{sshd.host}:{dest}"
        elif "--local" not in argv:
            argv.append("--local")
        if path is not None:
            argv += ["--escp_port", str(path.receiver_port), "--escp_portrange", "1",
                     "--connect-to", f"{path.data[0]}:{path.data[1]}"] + (["--bind", path.bind] if path.bind else [])
        if is_dir:
            argv.append("-r")
        o = opts
        if tool == "escp-dummy":
            o = EscpOptions(**{**o.__dict__, "ioengine": "dummy"})
        argv += o.argv()
        if tool == "escp-traced":  # the trace goes beside the destination, never inside it
            argv += ["--stats", "--trace", str(dest.with_name(dest.name + ".trace.json"))]
        if json_report is not None:
            argv += ["--json", str(json_report)]
        ends = [f"{sshd.host}:{src}", str(dest)] if pull and route == SSH and sshd is not None else [str(src), target]
        argv += (extra or []) + ends
        env = escp_env()
        env.pop(FAULT_ENV, None)  # only the scenario's own fault, never one left in the harness's environment
        env.update(o.environment())
        return Invocation(argv, verify=tool != "escp-dummy", json_report=json_report, cwd=REPO, env=env)
    if tool == "cp":
        return Invocation(["cp", "-r", str(src), str(dest)])
    if tool == "rsync":
        slash = "/" if is_dir else ""
        return Invocation(["rsync", "-a", str(src) + slash, str(dest) + slash])
    if tool == "limit":
        argv = [sys.executable, "-m", "harness.limit", "-t", str(opts.streams), "--blocksize", str(opts.blocksize)]
        if path is not None:
            argv += ["--port", str(path.receiver_port), "--connect-to", f"{path.data[0]}:{path.data[1]}"]
            argv += ["--bind", path.bind] if path.bind else []
        if json_report is not None:
            argv += ["--json", str(json_report)]
        return Invocation(argv + [str(src), str(dest)], json_report=json_report, cwd=REPO, env=escp_env())
    if tool in SSH_PEERS:
        if sshd is None:
            raise RuntimeError(f"{tool} needs the loopback sshd")
        port = [] if path is None or path.ssh_port is None else [str(path.ssh_port)]
        remote_src, remote_dest = (f"{sshd.host}:{src}", str(dest)) if pull else (str(src), f"{sshd.host}:{dest}")
        if tool == "rsync-ssh":
            ssh = shlex.join(sshd.ssh_argv() + (["-p", *port] if port else []))
            slash = "/" if is_dir else ""
            return Invocation(["rsync", "-a", "-e", ssh, remote_src + slash, remote_dest + slash])
        argv = ["scp", "-q", "-F", str(sshd.client_config)] + (["-P", *port] if port else [])
        if tool == "scp-gcm":
            argv += ["-c", "aes128-gcm@openssh.com"]
        if is_dir:
            argv.append("-r")
        return Invocation(argv + [remote_src, remote_dest])
    raise ValueError(f"unknown tool {tool!r}")


@dataclass
class Measurement:
    exit_code: int
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_bytes: int
    rss_source: str = ""
    server_cpu_s: float | None = None
    stderr_tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _kill_tree(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def measure(
    inv: Invocation, log_path: Path, *, sshd: PrivateSshd | None = None, timeout: float = 3600
) -> Measurement:
    """Run one command; wall time around spawn..reap, rusage from os.wait4 (the whole waited tree)."""
    server0 = sshd.server_cpu_s() if sshd else None
    # os.wait4's ru_maxrss never drops below this (Python) process's RSS at spawn time, so peak
    # RSS comes from GNU time when it exists (its own floor is ~1 MiB); CPU and wall from wait4.
    rss_file = log_path.with_suffix(".rss")
    argv = inv.argv
    if GNU_TIME:
        argv = [GNU_TIME, "-q", "-f", "%M", "-o", str(rss_file), *inv.argv]
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        # its own process group: a timeout or an interrupt kills the whole tree (time, scp, ssh ...)
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=inv.cwd,
            env=inv.env,
            start_new_session=True,
        )
        killer = threading.Timer(timeout, _kill_tree, (proc.pid,))
        killer.daemon = True
        killer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: do not leave the tool running
            _kill_tree(proc.pid)
            os.wait4(proc.pid, 0)
            raise
        finally:
            killer.cancel()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    server = None
    if sshd is not None and server0 is not None:
        time.sleep(0.05)  # let sshd reap its session child
        now = sshd.server_cpu_s()
        server = None if now is None else round(now - server0, 3)
    max_rss = ru.ru_maxrss * 1024
    rss_source = "wait4 (floor: harness RSS)"
    if GNU_TIME:
        try:
            max_rss = int(rss_file.read_text().split()[-1]) * 1024
            rss_source = "gnu-time"
        except (OSError, ValueError, IndexError):
            pass
    tail = ""
    if proc.returncode != 0:
        tail = log_path.read_bytes()[-1000:].decode(errors="replace")
    return Measurement(
        exit_code=proc.returncode,
        wall_s=wall,
        user_s=ru.ru_utime,
        sys_s=ru.ru_stime,
        max_rss_bytes=max_rss,
        rss_source=rss_source,
        server_cpu_s=server,
        stderr_tail=tail,
    )
