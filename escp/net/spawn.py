"""Starting the server: over ssh (`ssh ... host escp --server`) or as a local
subprocess (`--local`), then the initiator's side of the bootstrap over its stdin/stdout:
SessionInit out, SessionReply in, and, when asked, the SessionReport at the end
(messages name the server by the data role its SessionInit gave it).

The remote command line is fixed (`<escp program> --server`, each word shell-quoted);
paths and the key travel in the SessionInit on stdin, never on a command line, so
no remote shell interprets them (CVE-2020-15778 class). Host and user are checked
before ssh runs (CVE-2017-1000117 class).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable

from ..config import SshOptions
from ..errors import (
    AuthError,
    ConnectionFailure,
    EscpError,
    ProtocolError,
    TimeoutError_,
    UsageError,
    escape_name,
)
from ..protocol.bootstrap import (
    PROGRESS_EVERY_S,
    SessionInit,
    SessionReply,
    SetupProgress,
    decode_progress,
    decode_reply,
    encode_init,
    parse_header,
    read_header,
)
from ..protocol.report import SessionReport, decode_report
from ..protocol.roles import DataRole, Link
from ..protocol.wire import (
    BOOT_HEADER,
    BOOT_MAGIC,
    BOOT_SESSION_REPLY,
    BOOT_SESSION_REPORT,
    BOOT_SETUP_PROGRESS,
)
from .control import wait_readable

log = logging.getLogger("escp")

TERM_GRACE = 3.0  # seconds between SIGTERM and SIGKILL of a server that does not exit
_ERROR_LINE = re.compile(r"^escp: (\w[\w/]*) error: (.*)$")
# what ssh says when it reached the server but could not log in, or refused the server's identity
_AUTH_FAILURE = re.compile(r"Permission denied|Too many authentication failures|Authentication failed|"
                           r"Host key verification failed|No more authentication methods|"
                           r"REMOTE HOST IDENTIFICATION HAS CHANGED")
_USER_RE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._@-]*$")
_HOST_RE = re.compile(r"^[A-Za-z0-9_.:%\[\]-]+$")


def check_host(user: str | None, host: str) -> None:
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host  # [v6addr] form
    if not bare or bare.startswith("-") or "[" in bare or "]" in bare or not _HOST_RE.match(host):
        raise UsageError(f"invalid host name {escape_name(host)!r}")
    if user is not None and (not user or user.startswith("-") or not _USER_RE.match(user)):
        raise UsageError(f"invalid user name {escape_name(user)!r}")


def ssh_argv(opts: SshOptions, user: str | None, host: str) -> list[str]:
    check_host(user, host)
    argv = [opts.program, "-x", "-T", "-oForwardX11=no", "-oClearAllForwardings=yes"]
    if opts.port is not None:
        argv += ["-p", str(opts.port)]
    if opts.identity:
        argv += ["-i", opts.identity]
    for o in opts.options:
        argv += ["-o", o]
    if opts.config_file:
        argv += ["-F", opts.config_file]
    if opts.jump:
        argv += ["-J", opts.jump]
    if opts.cipher:
        argv += ["-c", opts.cipher]
    if opts.forward_agent:
        argv.append("-A")
    if opts.ip_version:
        argv.append(f"-{opts.ip_version}")
    if user:
        argv += ["-l", user]
    remote = " ".join(shlex.quote(w) for w in shlex.split(opts.remote_escp)) + " --server"
    return [*argv, "--", host.strip("[]"), remote]


def local_argv() -> list[str]:
    return [sys.executable, "-m", "escp", "--server"]


class ServerProcess:
    """The ssh (or local) child that runs `escp --server`; owns its pipes."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.argv = argv
        log.debug("starting the server: %s", shlex.join(argv))  # no secret: the key goes on stdin
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, close_fds=True)
        except OSError as exc:
            raise ConnectionFailure(f"cannot start {argv[0]}: {exc.strerror}") from None
        self.role = DataRole.RECEIVER  # the server's data role, from the SessionInit sent to it
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()

    def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")[:500]  # ssh ends some lines in CR LF
            self.stderr_tail.append(line)

    def remote_errors(self) -> str:
        self._stderr_thread.join(timeout=1.0)
        return "; ".join(escape_name(line) for line in self.stderr_tail if line.strip())

    def exchange(self, init: SessionInit, timeout: float,
                 on_progress: Callable[[SetupProgress], None] = lambda progress: None) -> SessionReply:
        """Send SessionInit, read SessionReply within `timeout`; clear errors for every way
        this fails. A server that waits (for a free port, §2.11) says so with SetupProgress
        messages (only if init asks for them), each passed to on_progress: every one proves
        it lives and moves the deadline to PROGRESS_EVERY_S + timeout after it, but never
        beyond the longest wait the server may take (init.receiver_idle_timeout) + timeout
        after the first."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.role = init.server_role
        try:
            self.proc.stdin.write(encode_init(init))
            self.proc.stdin.flush()
        except OSError:
            pass  # the process died; reading the reply explains why
        fd = self.proc.stdout.fileno()
        kinds = (BOOT_SESSION_REPLY, BOOT_SETUP_PROGRESS) if init.reads_progress else (BOOT_SESSION_REPLY,)
        deadline = time.monotonic() + timeout
        bound: float | None = None  # the latest deadline a waiting server can earn
        waiting: SetupProgress | None = None
        while True:
            try:
                header = self._read(fd, BOOT_HEADER.size, deadline, first=waiting is None)
                kind, length = read_header(header, *kinds)
                body = self._read(fd, length, deadline, first=False)
            except TimeoutError_ as exc:
                if waiting is None:
                    raise
                raise TimeoutError_(f"{exc.message} (it was waiting: {waiting.describe()})") from None
            if kind == BOOT_SESSION_REPLY:
                break
            waiting = decode_progress(body)
            now = time.monotonic()
            if bound is None:
                bound = now + init.receiver_idle_timeout + timeout
            deadline = max(deadline, min(now + PROGRESS_EVERY_S + timeout, bound))
            on_progress(waiting)
        reply = decode_reply(body)
        who = self.role.value
        if reply.version != init.version:
            raise ProtocolError(f"{who} speaks protocol version {reply.version}, this is {init.version}")
        if reply.error:
            cls = UsageError if reply.error_cause == "usage" else ConnectionFailure
            text = reply.error.removeprefix("escp: ")
            if cls is UsageError:
                text = text.removeprefix("usage error: ")  # printed once, by our own one_line()
            raise cls(f"{who}: {text}")
        if init.server_link is Link.LISTENER and (not 1 <= reply.port <= 65535 or not reply.address):
            raise ProtocolError(f"{who} replied without a usable address and port")
        return reply

    def read_report(self, stall: float) -> SessionReport | None:
        """The server's SessionReport (when SessionInit asked for one); None when the server
        ends without one or sends none for `stall` seconds. Its errors are protocol errors."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            header = self._read(fd, BOOT_HEADER.size, time.monotonic() + stall, first=False)
            length = parse_header(header, BOOT_SESSION_REPORT)
            body = bytearray()
            while len(body) < length:  # the deadline moves with every chunk: a large trace may take a while
                body += self._read(fd, min(length - len(body), 1 << 20), time.monotonic() + stall, first=False)
        except (ConnectionFailure, TimeoutError_):
            return None
        return decode_report(bytes(body))

    def _read(self, fd: int, n: int, deadline: float, first: bool) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError_(f"the {self.role.value} did not answer the session set-up in time")
            if not wait_readable(fd, min(left, 0.5)):
                continue
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise self._died()
            buf += chunk
            if first and len(buf) >= 4 and bytes(buf[:4]) != BOOT_MAGIC:
                more = self._peek_more(fd)
                text = escape_name((bytes(buf) + more)[:120])
                raise ProtocolError(f"the remote side printed unexpected output instead of the escp greeting "
                                    f"(a shell start-up file printing text?): '{text}'")
        return bytes(buf)

    @staticmethod
    def _peek_more(fd: int) -> bytes:
        return os.read(fd, 200) if wait_readable(fd, 0.2) else b""

    def _died(self) -> EscpError:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        errs = self.remote_errors()
        if code == 127 or "not found" in errs:
            return ConnectionFailure(f"remote escp not found (use -D/--escp to give its path): {errs}")
        if code == 255:
            cls = AuthError if _AUTH_FAILURE.search(errs) else ConnectionFailure
            return cls(f"ssh failed: {errs or 'exit status 255'}")
        return ConnectionFailure(f"{self.role.value} exited (status {code}) before the session started: {errs}")

    def explain(self, exc: EscpError, wait: float = 2.0) -> EscpError:
        """A set-up failure on our side is often the echo of a server that failed first
        (it closed its listener): prefer the server's own error line when it has one."""
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            return exc
        self._stderr_thread.join(timeout=1.0)
        for line in reversed(self.stderr_tail):
            m = _ERROR_LINE.match(line)
            if m:
                err = EscpError(f"{self.role.value}: {m.group(2)}")
                err.cause = m.group(1)
                err.exit_code = exc.exit_code
                return err
        return exc

    def close_stdin(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass

    def finish(self, timeout: float) -> int | None:
        """Close our side and wait for the child; when it outlives timeout, SIGTERM it (a
        receiver then cleans up its temp files), and SIGKILL it TERM_GRACE later."""
        self.close_stdin()
        for step in (self.proc.terminate, self.proc.kill):
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                step()
                timeout = TERM_GRACE
        try:
            return self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return None
