"""Host configuration: /etc/escp.conf (YAML), or the file named by $ESCP_CONFIG.

Keys (all optional):
  cpumask:  CPUs the stream worker threads may run on: a hex mask string ("0x3", "f")
            or a list of CPU numbers ([0, 1]). Applied per worker thread with
            os.sched_setaffinity(0, ...), which on Linux affects only the calling thread.
  nodemask: NUMA nodes to prefer (hex string or list). Accepted, validated and reported
            with -v; escp uses no NUMA library, so it is not applied.
A missing file is no configuration; a malformed one is a UsageError (exit 2) naming
the file and the key. Both the sender and the receiver read their own host's file.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from .errors import UsageError
from .yamldoc import safe_load

DEFAULT_PATH = "/etc/escp.conf"
MAX_CPU = 4096
KNOWN_KEYS = ("cpumask", "nodemask")

log = logging.getLogger("escp")


@dataclass(frozen=True)
class HostConfig:
    path: str = ""
    cpus: tuple[int, ...] | None = None
    nodes: tuple[int, ...] | None = None

    def describe(self) -> str:
        if not self.path:
            return "no host configuration file"
        cpus = ",".join(map(str, self.cpus)) if self.cpus is not None else "all"
        nodes = ",".join(map(str, self.nodes)) if self.nodes is not None else "any"
        return f"host configuration {self.path}: cpus {cpus}; nodemask {nodes} (reported, not applied)"


def config_path() -> str:
    return os.environ.get("ESCP_CONFIG") or DEFAULT_PATH


def parse_mask(value: object, key: str, path: str) -> tuple[int, ...]:
    """A hex mask string or a list of numbers -> sorted tuple of indexes."""
    where = f"{path}: {key}"
    if isinstance(value, bool):
        raise UsageError(f"{where}: expected a hex mask or a list of numbers, got {value!r}")
    if isinstance(value, int):
        value = hex(value)
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0x").replace(",", "").replace("_", "")
        try:
            mask = int(text, 16)
        except ValueError:
            raise UsageError(f"{where}: invalid hex mask {value!r}") from None
        if mask <= 0 or mask.bit_length() > MAX_CPU:
            raise UsageError(f"{where}: mask {value!r} selects nothing or is too large")
        return tuple(i for i in range(mask.bit_length()) if mask >> i & 1)
    if isinstance(value, list):
        if not value or len(value) > MAX_CPU:
            raise UsageError(f"{where}: list must name 1 to {MAX_CPU} numbers")
        out = set()
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < MAX_CPU:
                raise UsageError(f"{where}: {v!r} is not a number in 0-{MAX_CPU - 1}")
            out.add(v)
        return tuple(sorted(out))
    raise UsageError(f"{where}: expected a hex mask or a list of numbers, got {type(value).__name__}")


def load_host_config(path: str | None = None) -> HostConfig:
    path = path or config_path()
    try:
        with open(path, "rb") as fh:
            text = fh.read(1 << 20)
    except FileNotFoundError:
        return HostConfig()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    doc = safe_load(text, lambda line: f"{path}: not valid YAML" + (f" (line {line})" if line else ""))
    if doc is None:
        return HostConfig(path)
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a mapping of settings")
    unknown = [str(k) for k in doc if k not in KNOWN_KEYS]
    if unknown:
        raise UsageError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(KNOWN_KEYS)})")
    cpus = parse_mask(doc["cpumask"], "cpumask", path) if doc.get("cpumask") is not None else None
    nodes = parse_mask(doc["nodemask"], "nodemask", path) if doc.get("nodemask") is not None else None
    if cpus is not None and hasattr(os, "sched_getaffinity"):
        usable = os.sched_getaffinity(0)
        if not usable.intersection(cpus):
            raise UsageError(f"{path}: cpumask selects none of the CPUs this process may use "
                             f"({','.join(map(str, sorted(usable)))})")
    return HostConfig(path, cpus, nodes)


def apply_cpumask(cpus: tuple[int, ...] | None) -> None:
    """Pin the calling thread (only it, on Linux) to cpus; never fails a transfer."""
    if cpus is None or not hasattr(os, "sched_setaffinity"):
        return
    try:
        usable = os.sched_getaffinity(0)
        os.sched_setaffinity(0, set(cpus) & usable or usable)
    except OSError as exc:
        log.warning("cpumask not applied: %s", exc)
