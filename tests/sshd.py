"""A private OpenSSH sshd on 127.0.0.1 for end-to-end tests (used by the `sshd` fixture).

start_sshd() generates a host key and a client key in a temp dir, writes an sshd_config
(ListenAddress 127.0.0.1 and 127.0.0.2, a free port, StrictModes no, UsePAM no, its own
PidFile and AuthorizedKeysFile) and an ssh client config in which the alias `escptest`
resolves to it on 127.0.0.1 and `escptest2` on 127.0.0.2 (a second host for remote-to-
remote tests: sessions that come in there see 127.0.0.2 as their server address),
then runs /usr/sbin/sshd in the foreground (-D -e, log to a file) and waits, bounded, until
a real `ssh -F <config> escptest true` succeeds. No system service or system file is
touched except the privilege separation directory /run/sshd, which sshd insists on.

Also here: write_python_wrapper(), which makes the small shell script the remote side of a
test session runs as its escp program (sshd sessions have a minimal PATH and environment,
so the wrapper names the interpreter and the repository explicitly).
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"  # sshd refuses to re-exec itself unless started by absolute path
HOST_ALIAS = "escptest"
HOST2_ALIAS = "escptest2"  # the same sshd reached on 127.0.0.2: a second host
HOST2_ADDRESS = "127.0.0.2"
REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = float(os.environ.get("ESCP_SSHD_START_TIMEOUT", "15"))
MISSING_REASON = "openssh-server not installed (CI installs it via .ci/run)"


class SshdUnavailable(Exception):
    """The sshd binary or the ssh client is not installed (the fixture skips, or fails on CI)."""


class SshdStartError(Exception):
    """sshd is installed but did not come up; the message carries the tail of its log."""


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def ssh_client() -> str:
    path = shutil.which("ssh") or ("/usr/bin/ssh" if os.access("/usr/bin/ssh", os.X_OK) else None)
    if path is None:
        raise SshdUnavailable("openssh-client (ssh) not installed (CI installs it via .ci/run)")
    return path


def sshd_path() -> str:
    """The sshd binary: /usr/sbin/sshd, or ESCP_TEST_SSHD (absolute) to test the fixture itself."""
    return os.environ.get("ESCP_TEST_SSHD") or SSHD


def check_installed() -> None:
    """Raise SshdUnavailable unless sshd, ssh and ssh-keygen are all present."""
    if not os.access(sshd_path(), os.X_OK):
        raise SshdUnavailable(MISSING_REASON)
    ssh_client()
    if shutil.which("ssh-keygen") is None:
        raise SshdUnavailable("ssh-keygen not installed (CI installs it via .ci/run)")


@dataclass
class SshdServer:
    """A running private sshd plus everything a client needs to reach it.

    Attributes: host (the alias, 'escptest'), host2 ('escptest2': the same sshd on
    127.0.0.2, a second host), config (ssh client config, for `ssh -F`),
    port, user, key (client private key), known_hosts, sshd_config, log (sshd's stderr),
    workdir (the temp dir holding all of it), ssh (the client binary).
    """

    host: str
    config: Path
    port: int
    user: str
    key: Path
    known_hosts: Path
    sshd_config: Path
    log: Path
    workdir: Path
    ssh: str
    proc: subprocess.Popen[bytes] = field(repr=False)
    host2: str = HOST2_ALIAS

    @property
    def ssh_opts(self) -> list[str]:
        """Options to put before the host on any ssh command line: ['-F', config]."""
        return ["-F", str(self.config)]

    def ssh_argv(self, cmd_args: Sequence[str] | str = (), extra_opts: Sequence[str] = ()) -> list[str]:
        """The full argv of `ssh -F cfg [extra_opts] escptest [cmd_args...]`."""
        words = [cmd_args] if isinstance(cmd_args, str) else list(cmd_args)
        return [self.ssh, *self.ssh_opts, *extra_opts, self.host, *words]

    def run_ssh(
        self,
        cmd_args: Sequence[str] | str,
        *,
        input: bytes | None = None,
        timeout: float = 60.0,
        check: bool = False,
        extra_opts: Sequence[str] = (),
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a remote command through the real ssh client; stdout/stderr are captured bytes.

        cmd_args are remote command words; like real ssh, they are joined with spaces and
        run by the remote user's shell, so quote them (shlex.join) if they need it.
        """
        return subprocess.run(
            self.ssh_argv(cmd_args, extra_opts),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=check,
        )

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process we started (and its process group, which it leads), then reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def current_user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _q(path: Path) -> str:
    """Quote a path for an ssh/sshd config file."""
    return '"' + str(path) + '"'


def _sshd_supports(option_line: str, base_config: Path) -> bool:
    """Whether this sshd accepts an option (newer ones add e.g. PerSourcePenalties)."""
    probe = base_config.with_name(base_config.name + ".probe")
    probe.write_text(base_config.read_text() + option_line + "\n")
    try:
        r = subprocess.run([sshd_path(), "-t", "-f", str(probe)], capture_output=True, timeout=10)
        return r.returncode == 0
    finally:
        probe.unlink(missing_ok=True)


def _write_sshd_config(workdir: Path, port: int, host_key: Path, authorized: Path) -> Path:
    cfg = workdir / "sshd_config"
    lines = [
        "# private test sshd written by tests/sshd.py",
        "ListenAddress 127.0.0.1",
        f"ListenAddress {HOST2_ADDRESS}",
        f"Port {port}",
        f"HostKey {_q(host_key)}",
        f"PidFile {_q(workdir / 'sshd.pid')}",
        f"AuthorizedKeysFile {_q(authorized)}",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "UsePAM no",
        "UseDNS no",
        "PrintMotd no",
        "PrintLastLog no",
        "PermitUserEnvironment no",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "MaxStartups 100",
        "MaxSessions 100",
        "MaxAuthTries 6",
        "LoginGraceTime 30",
        "ClientAliveInterval 0",
        "Subsystem sftp internal-sftp",
        "LogLevel VERBOSE",
    ]
    cfg.write_text("\n".join(lines) + "\n")
    # OpenSSH >= 9.8 penalises sources that fail or drop connections; tests do that on purpose.
    if _sshd_supports("PerSourcePenalties no", cfg):
        cfg.write_text(cfg.read_text() + "PerSourcePenalties no\n")
    return cfg


def _write_client_config(workdir: Path, port: int, user: str, key: Path, known_hosts: Path) -> Path:
    cfg = workdir / "ssh_config"
    lines = [
        "# ssh client config for the private test sshd (use with ssh -F)",
        f"Host {HOST2_ALIAS}",
        f"    HostName {HOST2_ADDRESS}",
        f"Host {HOST_ALIAS}",
        "    HostName 127.0.0.1",
        f"Host {HOST_ALIAS} {HOST2_ALIAS}",
        f"    Port {port}",
        f"    User {user}",
        f"    IdentityFile {_q(key)}",
        "    IdentitiesOnly yes",
        "    IdentityAgent none",
        f"    UserKnownHostsFile {_q(known_hosts)}",
        "    GlobalKnownHostsFile /dev/null",
        "    StrictHostKeyChecking yes",
        "    UpdateHostKeys no",
        "    BatchMode yes",
        "    LogLevel ERROR",
        "    PasswordAuthentication no",
        "    KbdInteractiveAuthentication no",
        "    ConnectTimeout 10",
        "    ControlMaster no",
        "    ControlPath none",
        "    ForwardAgent no",
        "    ForwardX11 no",
        "    RequestTTY no",
        "    Compression no",
    ]
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def _ensure_privsep_dir() -> None:
    try:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    except PermissionError:  # unprivileged sshd runs without privilege separation
        pass


def _wait_ready(server: SshdServer, deadline: float) -> str | None:
    """Poll until `ssh escptest true` works. Returns None when ready, else why it is not."""
    last = "timed out"
    while time.monotonic() < deadline:
        if not server.alive():
            return f"sshd exited with status {server.proc.returncode}"
        try:
            r = server.run_ssh(["true"], timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            last = "ssh probe timed out"
            continue
        if r.returncode == 0:
            return None
        last = f"ssh probe exited {r.returncode}: {r.stderr.decode(errors='replace').strip()}"
        time.sleep(0.1)
    return last


def start_sshd(workdir: Path, timeout: float = START_TIMEOUT, attempts: int = 3) -> SshdServer:
    """Start a private sshd with its keys and configs under workdir; return once usable.

    A free port is picked by binding port 0; if another process takes it before sshd does,
    a new port is tried (up to `attempts` times).
    """
    check_installed()
    workdir.mkdir(parents=True, exist_ok=True)
    _ensure_privsep_dir()
    user = current_user()
    host_key = workdir / "ssh_host_ed25519_key"
    key = workdir / "id_ed25519"
    _keygen(host_key, "escp-test-host")
    _keygen(key, f"escp-test-client-{user}")
    authorized = workdir / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    host_pub = host_key.with_suffix(".pub").read_text().split()
    ssh = ssh_client()

    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        port = free_port()
        known_hosts = workdir / "known_hosts"
        known_hosts.write_text("".join(f"[{addr}]:{port} {host_pub[0]} {host_pub[1]}\n"
                                       for addr in ("127.0.0.1", HOST2_ADDRESS)))
        sshd_config = _write_sshd_config(workdir, port, host_key, authorized)
        config = _write_client_config(workdir, port, user, key, known_hosts)
        log = workdir / f"sshd.{attempt}.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen(
                [sshd_path(), "-D", "-e", "-f", str(sshd_config)],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown signals only it
            )
        server = SshdServer(
            host=HOST_ALIAS,
            config=config,
            port=port,
            user=user,
            key=key,
            known_hosts=known_hosts,
            sshd_config=sshd_config,
            log=log,
            workdir=workdir,
            ssh=ssh,
            proc=proc,
        )
        why = _wait_ready(server, time.monotonic() + timeout)
        if why is None:
            return server
        server.stop()
        text = server.log_text()
        failures.append(f"attempt {attempt} (port {port}): {why}\n--- sshd log ---\n{text[-2000:]}")
        if "Address already in use" not in text:
            break
    raise SshdStartError("private sshd did not come up:\n" + "\n".join(failures))


def write_python_wrapper(path: Path, python_args: Sequence[str], env: dict[str, str] | None = None) -> Path:
    """Write an executable /bin/sh script that runs `<this python> <python_args> "$@"`.

    PYTHONPATH is set to the repository root so the code under test is imported even in a
    bare sshd session; `env` adds further variables. Returns the path.
    """
    lines = [
        "#!/bin/sh",
        "# written by tests/sshd.py: runs the escp checkout under test with the test interpreter",
        f"PYTHONPATH={shlex.quote(str(REPO_ROOT))}" + '${PYTHONPATH:+":$PYTHONPATH"}',
        "export PYTHONPATH",
    ]
    for name, value in (env or {}).items():
        lines.append(f"{name}={shlex.quote(value)}")
        lines.append(f"export {name}")
    lines.append("exec " + shlex.join([sys.executable, *python_args]) + ' "$@"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def write_remote_escp(path: Path) -> Path:
    """The escp program for the remote side (`-D/--escp`): `python -m escp "$@"`."""
    return write_python_wrapper(path, ["-m", "escp"])
