"""Command line: scp-style arguments -> TransferConfig -> escp.transfer -> exit code.

Usage errors are found here, before ssh runs, and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import ENGINES, SKIP_MODES, SshOptions, TransferConfig
from .engine import faults
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EscpError, OutOfMemory, UsageError
from .logsetup import setup_logging, syslog_facility
from .progress import DEFAULT_INTERVAL, ProgressDisplay, summary_line
from .sysconf import load_host_config
from .target import RemoteTarget, is_remote, parse_target
from .units import parse_rate, parse_size

if TYPE_CHECKING:
    from .net.receive import ReceiveSession
    from .net.relay import Relay
    from .net.send import SendSession
    from .results import ProgressSnapshot, TransferResult

log = logging.getLogger("escp")

USAGE = """escp [options] SRC... [user@]host:[DEST]              push local files to a host
       escp [options] [user@]host:SRC... DEST              pull files from a host (SRC may be a glob)
       escp [options] hostA:SRC... hostB:[DEST]            remote to remote, directly from A to B
       escp [options] -3 hostA:SRC... hostB:[DEST]         remote to remote through this host
       escp [options] --filelist FILE [host:] DEST         sources from a list (remote paths with host:)
       escp [options] --local SRC... DEST                  local copy through a local receiver"""

EPILOG = """exit codes: 0 success, 1 failure, 2 usage error, 3 some files failed.
remote paths: [user@]host:[path], [user@][v6addr]:path, scp://[user@]host[:port][/path]; an argument
with a colon before any slash is remote (write ./a:b for a local file named a:b). Remote sources are
expanded by the remote escp, never by a shell: quote globs (host:'/data/*.h5') from your own shell.
All sources come from one side: local paths, or paths on one host.
host: and host:rel are relative to the remote home; ~ and ~user are expanded by the remote
escp; a DEST ending in / that does not exist is created."""


# options whose value is optional and then only given as --opt=VALUE: the bare option takes
# this default, never the next word (`escp --skip-existing SRC DEST` keeps SRC a source)
BARE_DEFAULTS = {"--skip-existing": "quick"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        words = list(sys.argv[1:] if args is None else args)
        end = words.index("--") if "--" in words else len(words)
        words[:end] = [f"{w}={BARE_DEFAULTS[w]}" if w in BARE_DEFAULTS else w for w in words[:end]]
        return super().parse_known_args(words, namespace)


def _int(flag: str) -> Callable[[str], int]:
    def conv(text: str) -> int:
        try:
            return int(text, 10)
        except ValueError:
            raise UsageError(f"{flag}: {text!r} is not a whole number") from None

    return conv


def _float(flag: str) -> Callable[[str], float]:
    def conv(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise UsageError(f"{flag}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise UsageError(f"{flag}: {text!r} is not a finite number")
        return value

    return conv


def check_output_path(path: str | None, flag: str) -> None:
    """An output file's directory must exist before anything runs."""
    if path is None:
        return
    if not path:
        raise UsageError(f"{flag}: empty path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{flag}: directory {parent} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{flag}: {path} is a directory")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="escp", usage=USAGE, description="High-speed verified file transfer over parallel encrypted "
                "streams.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", metavar="SRC... DEST")
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories recursively")
    p.add_argument("-t", "--parallel", type=_int("-t/--parallel"), default=4, metavar="N",
                   help="data streams (default 4)")
    p.add_argument("--blocksize", default="1M", metavar="SIZE", help="block size, minimum 256K (default 1M)")
    p.add_argument("-C", "--compress", action="store_true", help="zstd-compress blocks")
    p.add_argument("--compress-level", type=_int("--compress-level"), default=3, metavar="N", help="zstd level (default 3)")
    p.add_argument("--sparse", action="store_true", help="skip holes and all-zero blocks")
    p.add_argument("-p", "--preserve", action="store_true", help="preserve modes and times (and owners as root)")
    p.add_argument("--nochecksum", action="store_true", help="do not verify per-file digests")
    p.add_argument("--checksum-file", metavar="PATH", help="write a manifest (content digest, size, name) "
                   "of the files sent; check it later with --verify-manifest")
    p.add_argument("--skip-existing", nargs="?", const="quick", choices=SKIP_MODES, metavar="quick|digest",
                   help="do not send files the destination already has: quick (the default) compares size and "
                   "mtime (use with -p), digest compares content digests read on both sides (rsync -c)")
    p.add_argument("--resume", action="store_true",
                   help="keep what an interrupted copy verified (temp file and resume record at the destination) "
                   "and, on a re-run with --resume, send only the rest")
    p.add_argument("--verify-manifest", nargs=2, metavar=("MANIFEST", "DIR"),
                   help="check the files below DIR against a manifest and exit (0 all good, 3 some differ)")
    p.add_argument("--filelist", metavar="FILE", help="read sources from FILE ('-' = stdin): one path per line, "
                   "or YAML '- SRC' / '- [SRC, DST]' items; then give only DEST")
    p.add_argument("--fsync", action="store_true", help="fsync files and directories before reporting success")
    p.add_argument("--ioengine", default="posix", metavar="ENGINE", help="posix|dummy, or TX::RX for each side")
    p.add_argument("--nodirect", dest="direct", action="store_const", const="never", default="auto",
                   help="never read with O_DIRECT (default: O_DIRECT only for files not in the page cache)")
    p.add_argument("--direct", dest="direct", action="store_const", const="always",
                   help="read with O_DIRECT even when the file is in the page cache")
    p.add_argument("-l", "--limit", metavar="LIMIT",
                   help="rate limit for the whole transfer, in Kbit/s as in scp (5000 = 5 Mbit/s), "
                        "or with a unit: 100M (MB/s), 1Gbit")
    p.add_argument("-P", "--port", type=_int("-P/--port"), metavar="PORT", help="ssh port")
    p.add_argument("-i", dest="identity", metavar="FILE", help="ssh identity file")
    p.add_argument("-o", dest="ssh_options", action="append", default=[], metavar="OPTION",
                   help="ssh option (repeatable)")
    p.add_argument("-F", dest="ssh_config", metavar="FILE", help="ssh config file")
    p.add_argument("-J", dest="jump", metavar="HOST", help="ssh jump host")
    p.add_argument("-c", dest="cipher", metavar="CIPHER", help="ssh cipher")
    p.add_argument("-A", dest="agent", action="store_true", help="forward the ssh agent")
    p.add_argument("-4", dest="ipv4", action="store_true", help="IPv4 only")
    p.add_argument("-6", dest="ipv6", action="store_true", help="IPv6 only")
    p.add_argument("-B", dest="batch", action="store_true", help="batch mode: ssh asks for no password or "
                   "passphrase (-oBatchMode=yes)")
    p.add_argument("-3", dest="relay", action="store_const", const=True,
                   help="remote to remote: the data goes through this host")
    p.add_argument("-R", dest="relay", action="store_const", const=False,
                   help="remote to remote: the source host sends to the destination host directly")
    p.add_argument("-O", dest="scp_protocol", action="store_true",
                   help="scp's legacy protocol: accepted and ignored (escp has its own)")
    p.add_argument("-s", dest="sftp_protocol", action="store_true",
                   help="scp's SFTP protocol: accepted and ignored (escp has its own)")
    p.add_argument("-T", dest="no_name_check", action="store_true",
                   help="accepted and ignored: escp always checks every name the peer sends")
    p.add_argument("-X", dest="sftp_options", action="append", default=[], metavar="SFTP_OPTION",
                   help="scp's SFTP option: accepted and ignored")
    p.add_argument("-S", "--ssh", default="ssh", metavar="PROGRAM", help="ssh program")
    p.add_argument("-D", "--escp", default="escp", metavar="PROGRAM", help="remote escp program (default escp)")
    p.add_argument("--escp_port", type=_int("--escp_port"), default=1232, metavar="PORT", help="first receiver port (default 1232)")
    p.add_argument("--escp_portrange", type=_int("--escp_portrange"), default=10, metavar="N", help="ports to try (default 10)")
    p.add_argument("--bind", default="", metavar="ADDR", help="receiver bind address (default: the ssh server address)")
    p.add_argument("--connect-to", metavar="ADDR:PORT",
                   help="open the data streams to ADDR:PORT instead of the address the receiver reports "
                        "(NAT, port forwarding, test proxies)")
    p.add_argument("--timeout", type=_float("--timeout"), default=60.0, metavar="SECONDS", help="idle deadline in seconds (default 60)")
    p.add_argument("--local", action="store_true", help="DEST is a local path; receiver runs locally, no ssh")
    p.add_argument("--json", dest="json_path", metavar="FILE",
                   help="write a JSON report of the transfer ('-' = standard output)")
    p.add_argument("--trace", metavar="FILE", help="write a Chrome/Perfetto trace of both sides")
    p.add_argument("--stats", action="store_true", help="print per-stage statistics and a verdict")
    p.add_argument("--bits", action="store_true", help="show rates in bit/s")
    p.add_argument("--logfile", metavar="PATH|LOCAL0-7",
                   help="log to PATH.client and PATH.server, or to syslog facility LOCAL0..LOCAL7")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, summary or warnings (errors are still shown)")
    p.add_argument("--progress", action="store_true",
                   help="show progress even when stderr is not a terminal: a status line every "
                        f"--progress-interval seconds (default {DEFAULT_INTERVAL:g})")
    p.add_argument("--progress-interval", type=_float("--progress-interval"), metavar="SECONDS",
                   help="seconds between status lines when stderr is not a terminal (implies --progress)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("-V", "--version", action="version", version=f"escp {__version__}")
    p.add_argument("--usage", action="store_true", help="print a short usage line (BSD style) and exit")
    p.add_argument("--man", action="store_true", help="print the manual page (roff) and exit")
    p.add_argument("--completion", choices=("bash", "zsh"), help="print a shell completion script and exit")
    p.add_argument("--server", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rekey-bytes", type=_int("--rekey-bytes"), default=None, help=argparse.SUPPRESS)
    return p


def config_from_args(a: argparse.Namespace) -> TransferConfig:
    engines = a.ioengine.split("::") if "::" in a.ioengine else [a.ioengine, a.ioengine]
    if len(engines) != 2 or not all(e in ENGINES for e in engines):
        raise UsageError(f"invalid --ioengine {a.ioengine!r} (posix, dummy, or TX::RX such as posix::dummy)")
    if a.logfile is not None and syslog_facility(a.logfile) is None:
        if a.logfile.upper().startswith("LOCAL"):
            raise UsageError(f"--logfile {a.logfile!r}: syslog facilities are LOCAL0 to LOCAL7")
        check_output_path(a.logfile + ".client", "--logfile")
    for path, flag in ((a.json_path, "--json"), (a.trace, "--trace"), (a.checksum_file, "--checksum-file")):
        if path != "-" or flag != "--json":
            check_output_path(path, flag)
    if a.progress_interval is not None and not 0 < a.progress_interval <= 86400:
        raise UsageError(f"--progress-interval {a.progress_interval:g} out of range (0 to 86400 seconds)")
    filelist = None
    if a.filelist is not None:
        from .engine.filelist import parse_filelist, read_list_file

        filelist = tuple(parse_filelist(read_list_file(a.filelist)))
    if a.ipv4 and a.ipv6:
        raise UsageError("-4 and -6 exclude each other")
    ssh_options = (*a.ssh_options, "BatchMode=yes") if a.batch else tuple(a.ssh_options)
    ssh = SshOptions(program=a.ssh, port=a.port, identity=a.identity, options=ssh_options,
                     config_file=a.ssh_config, jump=a.jump, cipher=a.cipher, forward_agent=a.agent,
                     ip_version=4 if a.ipv4 else 6 if a.ipv6 else None, remote_escp=a.escp)
    extra: dict[str, object] = {"rekey_bytes": a.rekey_bytes} if a.rekey_bytes else {}
    if a.connect_to:
        host, _, port = a.connect_to.rpartition(":")
        if not host or not port.isdigit():
            raise UsageError(f"invalid --connect-to {a.connect_to!r} (expected ADDR:PORT)")
        extra["connect_to"] = (host.strip("[]"), int(port))
    return TransferConfig(
        streams=a.parallel, block_size=parse_size(a.blocksize, what="--blocksize"), recursive=a.recursive,
        compress=a.compress, compress_level=a.compress_level, sparse=a.sparse, preserve=a.preserve,
        checksum=not a.nochecksum, direct=a.direct, fsync=a.fsync, tx_engine=engines[0],
        rx_engine=engines[1], port_start=a.escp_port, port_range=a.escp_portrange, bind_address=a.bind,
        limit_bytes_per_s=parse_rate(a.limit) if a.limit else 0, idle_timeout=a.timeout, quiet=a.quiet,
        verbose=a.verbose, bits=a.bits, trace_path=a.trace, stats=a.stats, json_path=a.json_path,
        log_path=a.logfile, filelist=filelist, checksum_file=a.checksum_file, ssh=ssh, relay=bool(a.relay),
        skip_existing=a.skip_existing, resume=a.resume,
        **extra,  # type: ignore[arg-type]
    )


def report_dict(cfg: TransferConfig, result: TransferResult, code: int) -> dict[str, object]:
    rate = result.bytes_payload / result.seconds if result.seconds > 0 else 0.0
    outcomes = [{"name": o.name or None, "path": o.path, "size": o.size, "ok": o.ok,
                 "status": "skipped" if o.skipped else "resumed" if o.resumed else "copied" if o.ok else "failed",
                 "bytes_resumed": o.resumed, "cause": o.cause or None,
                 "message": o.message or None} for o in result.outcomes]
    return {
        "schema": 1,
        "ok": code == EXIT_OK,
        "exit_code": code,
        "error": result.error.one_line() if result.error else None,
        "bytes": result.bytes_payload,
        "bytes_sent": result.bytes_sent,
        "files": result.files_ok,
        "files_failed": result.files_failed,
        "files_skipped": result.files_skipped,
        "bytes_skipped": result.bytes_skipped,
        "files_resumed": result.files_resumed,
        "bytes_resumed": result.bytes_resumed,
        "seconds": result.seconds,
        "rate_bytes_per_s": rate,
        "streams": cfg.streams,
        "block_size": cfg.block_size,
        "compress": cfg.compress,
        "failures": [{"path": f.name, "cause": f.cause, "message": f.message} for f in result.failures],
        "warnings": result.warnings,
        "outcomes": outcomes,  # every file, in completion order, up to MAX_OUTCOMES
        "outcomes_total": len(outcomes) + result.outcomes_dropped,
        "outcomes_truncated": result.outcomes_dropped > 0,
        "stats": result.stats.to_dict() if result.stats is not None else None,  # type: ignore[attr-defined]
    }


def verify_manifest(manifest: str, root: str) -> int:
    if not os.path.isdir(root):
        raise UsageError(f"--verify-manifest: {root} is not a directory")
    from .engine.manifest import verify_tree

    good = bad = 0
    for ok, line in verify_tree(manifest, root):
        print(line)
        good, bad = good + ok, bad + (not ok)
    print(f"{good} files OK, {bad} failed", file=sys.stderr)
    return EXIT_OK if bad == 0 else EXIT_PARTIAL


def run(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    if a.server:
        from .net.server import serve

        if not 0 < a.timeout <= 86400:
            raise UsageError("--timeout out of range")
        explicit = any(w == "--timeout" or w.startswith("--timeout=") for w in argv)
        return serve(idle_cap=a.timeout if explicit else None)
    if a.verify_manifest:
        if a.paths:
            raise UsageError("--verify-manifest takes only MANIFEST and DIR")
        return verify_manifest(*a.verify_manifest)
    if a.usage or a.man or a.completion:
        from . import clidoc

        parser = build_parser()
        print(clidoc.usage(parser) if a.usage else clidoc.man_page(parser) if a.man
              else clidoc.completion(parser, a.completion), end="")
        return EXIT_OK
    cfg = config_from_args(a)
    faults.configure()  # test-only fault hook (ESCP_FAULT); inert when unset
    if cfg.filelist is not None:
        if len(a.paths) not in (1, 2) or (len(a.paths) == 2 and not is_remote(a.paths[0])):
            raise UsageError("with --filelist, give only the destination (and, for remote paths, host: first)")
    elif len(a.paths) < 2:
        raise UsageError("need at least one source and a destination")
    *source_texts, dest_text = a.paths
    sources: list[str | RemoteTarget] = list(source_texts)
    dest: str | RemoteTarget = dest_text
    if not a.local:
        sources = [parse_target(t) if is_remote(t) else t for t in source_texts]
        if is_remote(dest_text) or not any(isinstance(s, RemoteTarget) for s in sources):
            dest = parse_target(dest_text)  # all local: a usage error that points at --local
    from .net.spawn import check_host

    for end in (*sources, dest):
        if isinstance(end, RemoteTarget):
            check_host(end.user, end.host)
    host = load_host_config()
    cfg = replace(cfg, cpus=host.cpus)
    setup_logging(cfg.verbose, cfg.log_path, "client")
    log.debug("%s", host.describe())
    note_ignored_flags(a)
    sessions: list[SendSession | ReceiveSession | Relay] = []
    progress = progress_display(cfg, a, lambda: sessions[-1].snapshot() if sessions else None)
    if progress is not None:
        progress.start()
    try:
        from .api import transfer

        result = transfer(sources, dest, cfg, on_session=sessions.append)
    finally:
        if progress is not None:
            progress.close()
    code = result.exit_code
    if result.error is not None:
        print(result.error.one_line(), file=sys.stderr)
    elif not cfg.quiet and (line := summary_line(result, cfg.bits)) is not None:
        print(line, file=sys.stderr)
    if cfg.stats and result.stats is not None:
        print(result.stats.render_text(), file=sys.stderr)  # type: ignore[attr-defined]
    if cfg.trace_path and not result.trace_written:
        print(f"escp: warning: trace file {cfg.trace_path} was not written", file=sys.stderr)
    if cfg.json_path == "-":
        json.dump(report_dict(cfg, result, code), sys.stdout, indent=2)
        print()
    elif cfg.json_path:
        with open(cfg.json_path, "w") as fh:
            json.dump(report_dict(cfg, result, code), fh, indent=2)
    return code


def progress_display(cfg: TransferConfig, a: argparse.Namespace,
                     source: Callable[[], ProgressSnapshot | None]) -> ProgressDisplay | None:
    """A redrawn status line on a terminal; elsewhere plain lines, only when asked for."""
    terminal = sys.stderr.isatty()
    asked = a.progress or a.progress_interval is not None
    if cfg.quiet or not (terminal or asked):
        return None
    interval = a.progress_interval if a.progress_interval is not None else DEFAULT_INTERVAL
    return ProgressDisplay(source, sys.stderr, terminal=terminal, interval=interval, bits=cfg.bits)


def note_ignored_flags(a: argparse.Namespace) -> None:
    """scp flags that have no meaning for escp are accepted; -v says so."""
    for given, flag, why in ((a.scp_protocol, "-O", "selects scp's legacy protocol"),
                             (a.sftp_protocol, "-s", "selects scp's SFTP protocol"),
                             (a.sftp_options, "-X", "sets an SFTP option"),
                             (a.no_name_check, "-T", "turns off scp's name checks")):
        if given:
            log.debug("%s ignored: it %s; escp speaks its own protocol and always checks the names it receives",
                      flag, why)


def main(argv: list[str] | None = None) -> int:
    start = time.monotonic()
    del start
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        print(exc.one_line(), file=sys.stderr)
        print("usage: escp [options] SRC... [user@]host:[DEST] | [user@]host:SRC... DEST   (escp -h for help)",
              file=sys.stderr)
        return EXIT_USAGE
    except EscpError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("escp: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except MemoryError:
        print(OutOfMemory("out of memory").one_line(), file=sys.stderr)
        return EXIT_FAILURE
