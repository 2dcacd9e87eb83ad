"""`escp --server`: the server side of the bootstrap, started by an initiator over ssh
(or as a local child), whatever data role it then plays.

It reads SessionInit on stdin, replies on stdout with SessionReply (before it, while
every port of the range is busy and it waits for one, SetupProgress messages: §2.11),
runs the session SessionInit asks for (serving.py: receiver or sender, listener or
connector) until it ends, and then, when asked, writes a SessionReport: those are the
only bytes that ever reach stdout. EOF on stdin (the ssh channel closed) ends the
session; so do SIGTERM, SIGHUP and SIGINT.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from ..engine import faults
from ..errors import (
    ConnectionFailure,
    EscpError,
    ProtocolError,
    TimeoutError_,
    UsageError,
)
from ..logsetup import set_session, setup_logging
from ..protocol.bootstrap import (
    PROGRESS_EVERY_S,
    SessionInit,
    SessionReply,
    SetupProgress,
    decode_init,
    encode_progress,
    encode_reply,
    parse_header,
)
from ..protocol.report import encode_report
from ..protocol.roles import DataRole, Link
from ..protocol.wire import BOOT_HEADER, BOOT_SESSION_INIT, STAGE_PORT_WAIT
from ..sysconf import load_host_config
from ..target import expand_home
from ..trace import NULL_TRACER, Tracer
from .control import SessionControl, wait_readable
from .serving import ServedSession
from .streams import bind_listener, port_span

log = logging.getLogger("escp.server")

BOOT_DEADLINE = 60.0  # seconds for the SessionInit header, and again for its body
EXIT_LINGER = 10.0  # after the session: how long to wait for the initiator to close the channel
REPORT_STALL = 30.0  # the report: how long the initiator may leave our stdout full
STDIN_CHUNK = 4096


def read_exact_fd(fd: int, n: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError_("no session set-up received on stdin")
        if not wait_readable(fd, left):
            continue
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise ConnectionFailure("stdin closed before the session set-up arrived")
        out += chunk
    return bytes(out)


def choose_bind_address(init: SessionInit) -> str:
    """The address to listen on (§2.6): the explicit one, else where ssh came in."""
    if init.bind_address:
        return init.bind_address
    conn = os.environ.get("SSH_CONNECTION", "").split()
    if len(conn) == 4:
        return conn[2]
    return "127.0.0.1"


class PortWait:
    """While every port of the range is busy (§2.11): tell the initiator (SetupProgress,
    when it reads them: at once, then every PROGRESS_EVERY_S) and log it; between tries,
    watch stdin, whose EOF means the initiator gave up."""

    def __init__(self, init: SessionInit, address: str, limit: float, send: Callable[[bytes], None]) -> None:
        self.init = init
        self.span = port_span(address, init.port_start, init.port_range)
        self.limit = limit
        self.send = send
        self.next_report = 0.0  # monotonic time of the next SetupProgress

    def on_wait(self, waited: float) -> None:
        now = time.monotonic()
        if now < self.next_report:
            return
        if not self.next_report:
            log.info("every port in %s is busy: waiting up to %.0f s for one", self.span, self.limit)
        self.next_report = now + PROGRESS_EVERY_S
        if self.init.reads_progress:
            try:
                self.send(encode_progress(SetupProgress(STAGE_PORT_WAIT, int(waited * 1000), int(self.limit * 1000),
                                                        self.span)))
            except OSError:
                raise self.gone() from None

    def pause(self, seconds: float) -> None:
        if wait_readable(0, seconds) and not os.read(0, STDIN_CHUNK):
            raise self.gone()

    @staticmethod
    def gone() -> ConnectionFailure:
        return ConnectionFailure("ssh channel closed (initiator went away) while waiting for a free port")


def install_signal_handlers(ctl: SessionControl, role: DataRole) -> None:
    """SIGTERM, SIGHUP and SIGINT end the session like a fatal error: temp files are removed
    and the listener closed before exit (the abort runs in a thread, not in the handler)."""

    def handler(signum: int, _frame: object) -> None:
        err = ConnectionFailure(f"{role.value} terminated by signal {signal.Signals(signum).name}")
        threading.Thread(target=ctl.abort, args=(err,), daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, handler)


def watch_stdin(ctl: SessionControl) -> None:
    """EOF on stdin before the session is done: the initiator went away."""
    while True:
        try:
            chunk = os.read(0, STDIN_CHUNK)
        except OSError:
            chunk = b""
        if not chunk:
            if not ctl.done.is_set():
                ctl.abort(ConnectionFailure("ssh channel closed (initiator went away)"))
            return


def write_all(fd: int, data: bytes, stall: float) -> bool:
    """Write data to a pipe, giving up when the reader takes none of it for `stall` seconds."""
    view = memoryview(data)
    p = select.poll()
    p.register(fd, select.POLLOUT)
    os.set_blocking(fd, False)
    try:
        while view:
            if not p.poll(int(stall * 1000)):
                return False
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue
    except OSError:
        return False
    finally:
        os.set_blocking(fd, True)
    return True


def serve(tracer: Tracer = NULL_TRACER, idle_cap: float | None = None) -> int:
    """Entry point of `escp --server`: returns the process exit code."""
    out_fd = os.dup(1)
    os.dup2(2, 1)  # nothing but bootstrap replies may reach the ssh stdout
    sys.stdout = sys.stderr

    def send(data: bytes) -> None:
        while data:
            data = data[os.write(out_fd, data):]

    def reply(r: SessionReply) -> None:
        send(encode_reply(r))

    try:
        faults.configure()
        header = read_exact_fd(0, BOOT_HEADER.size, time.monotonic() + BOOT_DEADLINE)
        body = read_exact_fd(0, parse_header(header, BOOT_SESSION_INIT), time.monotonic() + BOOT_DEADLINE)
        init = decode_init(body)
    except EscpError as exc:
        print(exc.one_line(), file=sys.stderr)
        if isinstance(exc, ProtocolError):  # tell the initiator why, if it speaks our bootstrap
            try:
                reply(SessionReply("", 0, error=exc.one_line(), error_cause=exc.cause))
            except OSError:
                pass
        return exc.exit_code
    setup_logging(init.session_flags.verbose, init.log_path or None, "server")
    set_session(init.session_id)
    try:
        host = load_host_config()
    except UsageError as exc:
        reply(SessionReply("", 0, error=f"{init.server_role.value} host configuration: {exc.message}",
                           error_cause="usage"))
        return exc.exit_code
    log.debug("session %016x: %s as %s, %s", init.session_id, host.describe(), init.server_role.value,
              init.server_link.value)
    if init.session_flags.trace and tracer is NULL_TRACER:
        tracer = _recording_tracer(init.server_role)
    # the initiator's wish, clamped (SessionInit.receiver_idle_timeout); our own --timeout,
    # when given, caps it: a peer can shorten the deadline, never lift it
    idle = init.receiver_idle_timeout if idle_cap is None else min(init.receiver_idle_timeout, idle_cap)
    listener = None
    try:
        # scp's remote path rules: `~` and `~user` are expanded here, by the side that owns the path
        init = replace(init, dest_path=expand_home(init.dest_path))
        served = ServedSession(init, idle, tracer, host.cpus)
        address, port = "", 0
        if init.server_link is Link.LISTENER:
            address = choose_bind_address(init)
            wait = PortWait(init, address, init.port_wait(idle), send)
            listener = bind_listener(address, init.port_start, init.port_range, wait.limit, wait.on_wait, wait.pause)
            address, port = listener.getsockname()[:2]
        reply(served.reply(address, port))
    except EscpError as exc:
        try:
            reply(SessionReply("", 0, error=exc.one_line(), error_cause=exc.cause))
        except OSError:
            log.warning("%s (the initiator is gone: no reply)", exc.one_line())
        if listener is not None:
            listener.close()
        return exc.exit_code
    ctl = served.ctl
    served.run_streams(listener)
    threading.Thread(target=watch_stdin, args=(ctl,), name="stdin", daemon=True).start()
    install_signal_handlers(ctl, init.server_role)
    ctl.wait()
    if listener is not None:
        listener.close()
    code, report = served.finish()
    if report.error:
        print(report.error, file=sys.stderr)
    if init.report and not write_all(out_fd, encode_report(report), REPORT_STALL):
        log.warning("the initiator did not take the session report")
    if report.error:
        return code
    # wait (bounded) for the initiator to close the ssh channel so it reads SESSION_DONE first
    deadline = time.monotonic() + EXIT_LINGER
    while time.monotonic() < deadline:
        if wait_readable(0, 0.2) and not os.read(0, STDIN_CHUNK):
            break
    return code


def _recording_tracer(role: DataRole) -> Tracer:
    try:
        from ..trace.recorder import RecordingTracer

        return RecordingTracer(role.value)
    except Exception:  # noqa: BLE001 - tracing is optional and never breaks a transfer
        return NULL_TRACER
