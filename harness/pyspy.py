"""py-spy for the harness: command lines and stage attribution of sampled stacks.

py-spy samples Python stacks from outside the process; it complements the tracer by
showing where the time goes inside a stage (and in code the tracer does not cover).

record_command() builds `py-spy record` command lines (attach to a pid, or start a
command; --subprocesses to follow the receiver started by the sender).

attribute_samples() reads `--format raw` output (collapsed stacks: one line per
distinct stack, "frame;frame;...;leaf COUNT", each frame "func (file.py:line)", roots
such as "process 12:"cmd"" and "thread (0x..): tx-0" when --subprocesses/--threads)
and assigns each sample to an escp stage. The stack is scanned from the leaf up and
the first frame that matches a rule wins:

    reader.py -> read        checksum.py -> checksum/verify    compress.py -> compress/decompress
    writer.py -> write       cipher/crypt/aead files or *encrypt*/*decrypt* functions -> encrypt/decrypt
    send*/sendall/sendmsg functions -> send                recv*/recv_into -> recv
    threading/queue/selectors waits -> wait                anything else -> other

py-spy shortens file names (often to the base name), so rules match the base name.
When a function name does not give the direction (open_frame in cipher.py), a stack of a
receiver (thread named rx-N, or a frame in the receiving session's modules, net/receive.py and net/rxfiles.py) counts as decrypt / decompress /
verify, any other as encrypt / compress / checksum.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PySpyFormat = Literal["raw", "speedscope", "flamegraph"]

STAGES = ("read", "checksum", "compress", "decompress", "encrypt", "decrypt", "send", "recv",
          "verify", "write", "wait", "other")

_FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SEND_RE = re.compile(r"^_*(sock_|libc_)?(send|sendall|sendmsg|sendto|sendfile)(_\w+)?$")
_RECV_RE = re.compile(r"^_*(sock_|libc_)?(recv|recvmsg|recvfrom)(_\w+)?$")
_RX_THREAD = re.compile(r"\): rx-")
_RX_FILES = {"receive.py", "rxfiles.py"}  # the receiving session (net/), whatever its thread is named
_WAIT_FILES = {"threading.py", "queue.py", "selectors.py", "synchronize.py"}
_WAIT_FUNCS = re.compile(r"(^|\.)(wait|get|put|select|acquire|join|_wait_for_tstate_lock)$")


def parse_frame(frame: str) -> tuple[str, str]:
    """(function, file base name) of one collapsed-stack frame; file is '' when absent."""
    m = _FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), os.path.basename(m.group("file"))


def stage_of_frame(func: str, file: str, receiving: bool = False) -> str | None:
    """The stage a single frame belongs to, or None when the frame says nothing.

    receiving: the stack is a receiver's (decides cipher/compress/checksum frames whose
    function name does not say the direction)."""
    bare = func.rsplit(".", 1)[-1]
    low_file = file.lower()
    if file == "reader.py":
        return "read"
    if file == "writer.py":
        return "write"
    if file == "checksum.py":
        return "verify" if "verify" in bare or (receiving and "checksum" not in bare) else "checksum"
    if file == "compress.py":
        return "decompress" if "decompress" in bare or (receiving and "compress" not in bare) else "compress"
    if "decrypt" in bare:
        return "decrypt"
    if "encrypt" in bare:
        return "encrypt"
    if any(key in low_file for key in ("cipher", "crypt", "aead")):
        return "decrypt" if receiving else "encrypt"
    if _SEND_RE.match(bare):
        return "send"
    if _RECV_RE.match(bare):
        return "recv"
    if file in _WAIT_FILES and _WAIT_FUNCS.search(func):
        return "wait"
    return None


def stage_of_stack(frames: Sequence[str]) -> str:
    """Stage of one sampled stack (root first, as py-spy writes it)."""
    parsed = [parse_frame(f) for f in frames if not f.startswith(("process ", "thread ("))]
    receiving = any(_RX_THREAD.search(f) for f in frames[:3] if f.startswith("thread (")) or any(
        file in _RX_FILES for _func, file in parsed)
    for func, file in reversed(parsed):
        stage = stage_of_frame(func, file, receiving)
        if stage is not None:
            return stage
    return "other"


@dataclass
class StageShares:
    """Sample counts per stage, overall and per root label (process or thread)."""

    counts: Counter[str] = field(default_factory=Counter)
    by_root: dict[str, Counter[str]] = field(default_factory=dict)
    bad_lines: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def shares(self) -> dict[str, float]:
        """Fraction of samples per stage (stages without samples omitted), largest first."""
        total = self.total
        if total == 0:
            return {}
        return {k: v / total for k, v in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def _root_label(frames: Sequence[str]) -> str:
    labels = [f for f in frames[:2] if f.startswith(("process ", "thread ("))]
    return ";".join(labels) if labels else "all"


def attribute_lines(lines: Iterable[str], into: StageShares | None = None) -> StageShares:
    """Attribute collapsed-stack lines ("a;b;c COUNT") to stages."""
    out = into if into is not None else StageShares()
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count_text = line.rpartition(" ")
        try:
            count = int(count_text)
        except ValueError:
            out.bad_lines += 1
            continue
        if not stack or count < 0:
            out.bad_lines += 1
            continue
        frames = stack.split(";")
        stage = stage_of_stack(frames)
        out.counts[stage] += count
        out.by_root.setdefault(_root_label(frames), Counter())[stage] += count
    return out


def attribute_samples(paths: Iterable[str | os.PathLike[str]]) -> StageShares:
    """Read py-spy raw output files and attribute their samples to stages."""
    out = StageShares()
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as fh:
            attribute_lines(fh, out)
    return out


def record_command(
    output: str | os.PathLike[str],
    *,
    pid: int | None = None,
    command: Sequence[str] | None = None,
    fmt: PySpyFormat = "raw",
    rate: int = 100,
    subprocesses: bool = False,
    nonblocking: bool = True,
    threads: bool = True,
    native: bool = False,
    idle: bool = False,
    duration: int | None = None,
    exe: str = "py-spy",
) -> list[str]:
    """`py-spy record` argv: attach to pid, or run command (give exactly one of them)."""
    if (pid is None) == (command is None):
        raise ValueError("give exactly one of pid or command")
    if rate <= 0:
        raise ValueError("rate must be positive")
    argv = [exe, "record", "--format", fmt, "-o", str(Path(output)), "--rate", str(rate)]
    if pid is not None:
        argv += ["--pid", str(pid)]
    if nonblocking:
        argv.append("--nonblocking")
    if subprocesses:
        argv.append("--subprocesses")
    if threads:
        argv.append("--threads")
    if native:
        argv.append("--native")
    if idle:
        argv.append("--idle")
    if duration is not None:
        argv += ["--duration", str(duration)]
    if command is not None:
        argv += ["--", *command]
    return argv


__all__ = [
    "STAGES",
    "StageShares",
    "attribute_lines",
    "attribute_samples",
    "parse_frame",
    "record_command",
    "stage_of_frame",
    "stage_of_stack",
]
