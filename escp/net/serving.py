"""The session `escp --server` runs once SessionInit has arrived, in the data role and the
link role SessionInit gives it (docs/protocol.md §1.1, §2.3).

A receiving server plans its destination (scp's rules, §9.6) and runs a ReceiveSession;
a sending server expands its sources itself (globs, `~`, never a shell: §2.3) and runs a
SendSession. A listening server accepts the streams on the port it reports in its
SessionReply; a connecting one opens them to the peer SessionInit names (the other
server of a remote-to-remote transfer). When asked (SessionInit.report), the session's
outcome goes back to the initiator as a SessionReport (report.py, §2.8); the trace then
travels there too, not to the peer.
"""

from __future__ import annotations

import socket
import time

from ..engine.filelist import ListEntry
from ..engine.sink import FileStore
from ..engine.sources import expand_sources, top_level_shape
from ..errors import EXIT_OK, EXIT_PARTIAL
from ..protocol.bootstrap import SessionInit, SessionReply
from ..protocol.handshake import StreamSecrets
from ..protocol.report import SessionReport
from ..protocol.roles import DataRole, Link
from ..protocol.wire import TRACE_TOTAL_MAX
from ..results import TransferResult
from ..trace import Tracer, export_json
from .receive import ReceiveSession
from .send import SendOptions, SendSession
from .streams import StreamListener, connect_streams

CONNECT_TIMEOUT = 30.0  # a connecting server's bound on each stream's connect and handshake


class ServedSession:
    """The server's one session, whichever data role it plays."""

    def __init__(self, init: SessionInit, idle: float, tracer: Tracer, cpus: tuple[int, ...] | None) -> None:
        self.init = init
        self.role = init.server_role
        self.tracer = tracer
        self.idle = idle
        self.started = time.monotonic()
        self.shape = (0, False)  # a sending server's top-level count and whether its one source is a directory
        flags = init.session_flags
        self.session: ReceiveSession | SendSession
        self.store: FileStore | None = None
        if self.role is DataRole.RECEIVER:
            self.store = FileStore.for_session(init)
            self.session = ReceiveSession(init, self.store, idle, tracer, cpus, trace_to_peer=not init.report)
        else:
            sources = expand_sources(list(init.sources))
            if not flags.dest_dir:
                self.shape = top_level_shape(sources)
            opts = SendOptions(tuple(sources), tuple(ListEntry(i.src, i.dst) for i in init.filelist),
                               flags.recursive, init.tx_engine or "posix", "never" if flags.no_direct else "auto",
                               init.rate_limit, cpus, None, quiet=True, idle_timeout=idle, to_report_only=True)
            self.session = SendSession(init, opts, tracer)
        self.ctl = self.session.ctl

    def reply(self, address: str, port: int) -> SessionReply:
        plan = self.store.plan if self.store is not None else None
        return SessionReply(address, port, dest_is_dir=bool(plan and plan.dest_is_dir),
                            server_time_ns=time.monotonic_ns(), idle_timeout_ms=int(self.idle * 1000),
                            top_level_count=self.shape[0], top_dir=self.shape[1])

    def run_streams(self, listener: socket.socket | None) -> None:
        """Start the session and its streams: accepted on `listener`, or opened to the peer."""
        session, init = self.session, self.init
        # the idle deadline counts from here: the set-up before it (a wait for a free port
        # included, §2.11) had bounds of its own
        self.ctl.progress()
        if isinstance(session, SendSession):
            session.start(None, self.idle)  # the peer's wish is ours (SessionInit.idle_timeout_ms)
        else:
            session.start()
        secrets = StreamSecrets.of(init)
        if init.server_link is Link.LISTENER:
            assert listener is not None
            self.ctl.add_socket(listener)
            self.ctl.guard(StreamListener(listener, secrets, self.role, session).run, "accept")
        else:
            self.ctl.guard(lambda: connect_streams(init.peer_address, init.peer_port, secrets, self.role,
                                                   CONNECT_TIMEOUT, session), "connect")

    def finish(self) -> tuple[int, SessionReport]:
        """After the session: the exit code and the report for the initiator."""
        ctl = self.ctl
        error = ctl.error if ctl.error is not None and not ctl.done.is_set() else None
        if isinstance(self.session, ReceiveSession):
            self.session.cleanup()
            core = self.session.core
            ok, failed, nbytes, problems, dropped = core.files_ok, core.files_failed, core.bytes_written, [], 0
            skipped, bytes_skipped = core.files_skipped, core.bytes_skipped
            resumed = (0, 0)  # a receiving server's initiator counts its own (a push)
        else:
            result: TransferResult = self.session.finish(time.monotonic() - self.started)
            rep = self.session.report
            ok, failed, nbytes = result.files_ok, result.files_failed, result.bytes_payload
            problems, dropped = rep.problems, rep.problems_dropped
            skipped, bytes_skipped = result.files_skipped, result.bytes_skipped
            resumed = (result.files_resumed, result.bytes_resumed)
        code = error.exit_code if error is not None else EXIT_OK if failed == 0 else EXIT_PARTIAL
        return code, SessionReport(ok, failed, nbytes, error.one_line() if error else "", error.cause if error else "",
                                   tuple(problems), dropped, self.trace_json(), skipped, bytes_skipped, *resumed)

    def trace_json(self) -> bytes:
        """The server's trace for its report (TRACE flag), b"" without one."""
        flags = self.init.session_flags
        return export_json(self.tracer, flags.trace_events, TRACE_TOTAL_MAX) if flags.trace else b""
