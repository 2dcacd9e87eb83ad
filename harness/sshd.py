"""A private OpenSSH server on 127.0.0.1 for the ssh-based peers (scp, rsync over ssh).

Generates a host key and a client key in a temp directory, writes an sshd_config and an
ssh client config (host alias `escp-bench`), starts `/usr/sbin/sshd -f cfg -D -e` on a free
loopback port and waits until it accepts a login. Never touches ~/.ssh or /etc/ssh.
Use as a context manager; `unavailable_reason()` says why ssh peers cannot run.

For escp over ssh it also writes `remote_escp`, the program the remote side runs (`escp -D`):
this checkout's `python -m escp` with this interpreter (an sshd session has a bare environment),
and picks `escp_port`, the first of ESCP_PORTS free ports for escp's receiver.

Concurrent logins: sshd's default `MaxStartups 10:30:100` drops 30 % of the new connections
once 10 are unauthenticated at once, and all beyond 100; many sessions started together (the
concurrency scenario: 64 at once) go past that, so this sshd allows MAX_STARTUPS (a real
data-transfer node serving many sessions needs the same: docs/tuning.md). MaxSessions limits
the sessions multiplexed over ONE connection; every escp or scp run opens its own, so the
default (10) never applies here.
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

SSHD = Path("/usr/sbin/sshd")
HOST_ALIAS = "escp-bench"
REPO = Path(__file__).resolve().parent.parent


def unavailable_reason() -> str | None:
    if not SSHD.exists():
        return f"{SSHD} not found"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the harness dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class PrivateSshd:
    ESCP_PORTS = 10  # escp's receiver tries this many ports from escp_port on
    MAX_STARTUPS = "256"  # unauthenticated connections at once (sshd's default: 10:30:100)

    def __init__(self, max_startups: str = MAX_STARTUPS) -> None:
        self.max_startups = max_startups
        self.dir = Path(tempfile.mkdtemp(prefix="escp-bench-sshd-"))
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.client_config = self.dir / "ssh_config"
        self.remote_escp = self.dir / "remote-escp"
        self.escp_port = 0
        self.host = HOST_ALIAS

    # ------------------------------------------------------------------ setup
    def _keygen(self, path: Path) -> None:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self, timeout: float = 10.0) -> PrivateSshd:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        d = self.dir
        self._keygen(d / "host_ed25519")
        self._keygen(d / "client_ed25519")
        auth = d / "authorized_keys"
        shutil.copy(d / "client_ed25519.pub", auth)
        os.chmod(auth, 0o600)
        self.port = _free_port()
        self.escp_port = _free_port()
        self._write_remote_escp()
        user = getpass.getuser()
        (d / "sshd_config").write_text(
            f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {d / "host_ed25519"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {auth}
PermitRootLogin yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
StrictModes no
UsePAM no
AllowUsers {user}
MaxStartups {self.max_startups}
Subsystem sftp internal-sftp
LogLevel ERROR
"""
        )
        self.client_config.write_text(
            f"""Host {HOST_ALIAS}
  HostName 127.0.0.1
  Port {self.port}
  User {user}
  IdentityFile {d / "client_ed25519"}
  IdentitiesOnly yes
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  LogLevel ERROR
  BatchMode yes
"""
        )
        # Debian's sshd refuses to start without its privilege separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = open(d / "sshd.log", "wb")
        self.proc = subprocess.Popen(
            [str(SSHD), "-f", str(d / "sshd_config"), "-D", "-e"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(d / 'sshd.log').read_text()[-500:]}")
            r = subprocess.run(
                self.ssh_argv() + [self.host, "true"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
            )
            if r.returncode == 0:
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"cannot log in to private sshd: {r.stderr.decode()[-300:]}")
            time.sleep(0.1)

    def _write_remote_escp(self) -> None:
        self.remote_escp.write_text(
            "#!/bin/sh\n# the escp of this checkout, for escp -D over the private sshd\n"
            f"PYTHONPATH={shlex.quote(str(REPO))}\nexport PYTHONPATH\n"
            f"exec {shlex.quote(sys.executable)} -m escp \"$@\"\n"
        )
        self.remote_escp.chmod(0o755)

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-F", str(self.client_config)]

    def server_cpu_s(self) -> float | None:
        """CPU seconds of sshd's exited (waited-for) children: the server side of each session."""
        if self.proc is None:
            return None
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        # fields after ')' start at field 3 (state); cutime=16, cstime=17 -> index 13, 14
        tick = os.sysconf("SC_CLK_TCK")
        return (int(fields[13]) + int(fields[14])) / tick

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PrivateSshd:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
