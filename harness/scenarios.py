"""Load harness/scenarios.toml into typed scenarios for one profile (quick, full).

Scenarios are data: a dataset, escp options, a list of peers, repeat counts, and for a WAN
scenario the emulated path (PathOptions: RTT, window, bottleneck; harness/pathemu.py). Sweeps
expand into one scenario per value (group + x value kept for the scaling plots). Every scenario
has a stable hash of its effective definition so results can be matched against a baseline.
`tags` (e.g. "wan") and `on_demand` (run only when `--only` selects it) steer the selection.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.pathemu import PathSpec

DEFAULT_FILE = Path(__file__).with_name("scenarios.toml")
KNOWN_PEERS = {"cp", "rsync", "limit", "scp", "scp-gcm", "rsync-ssh", "escp-dummy", "escp-traced", "escp-local"}
FAULT_ENV = "ESCP_FAULT"  # escp's test-only I/O fault hook (escp/engine/faults.py)
PUSH, PULL = "push", "pull"  # which way every tool of a scenario copies
PULL_PEERS = {"scp", "scp-gcm", "rsync-ssh", "escp-dummy", "escp-traced"}  # the peers that can fetch over the sshd


@dataclass(frozen=True)
class PathOptions:
    """An emulated WAN path (scenarios.toml `path = { rtt_ms, window, bottleneck, tbf, stalls }`)."""

    rtt_ms: float
    window: str = "4M"  # bytes in flight per connection (binary suffixes)
    bottleneck: str | None = None  # total rate across connections, escp -l syntax (1Gbit, 100M)
    tbf: bool = False  # the bottleneck as tc tbf in a network namespace (root), else in user space
    stalls: tuple[tuple[float, float], ...] = ()  # (start s, duration s) after the first connection

    def spec(self, *, user_space_rate: bool = True) -> PathSpec:
        from escp.units import parse_rate
        from harness.datasets import parse_size

        rate = parse_rate(self.bottleneck) if self.bottleneck and user_space_rate else None
        return PathSpec(self.rtt_ms / 1e3, parse_size(self.window), rate, tuple(self.stalls))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PathOptions:
        stalls = tuple((float(a), float(b)) for a, b in d.get("stalls", ()))
        return cls(**{**d, "stalls": stalls})


@dataclass(frozen=True)
class EscpOptions:
    streams: int = 4
    blocksize: str = "1M"
    compress: bool = False
    compress_level: int | None = None
    sparse: bool = False
    ioengine: str = "posix"
    limit: str | None = None  # -l RATE: pace the whole transfer (a network bottleneck on purpose)
    fault: str | None = None  # an ESCP_FAULT spec for the escp processes (e.g. a disk delay)

    # added after scenarios were first hashed: left out of the hash while unset, so the hashes
    # of scenarios that do not use them (and baselines matched by hash) stay as they were
    HASH_OMIT_UNSET = ("limit", "fault")

    def argv(self) -> list[str]:
        """escp CLI options for these settings (the contract in the harness README)."""
        out = ["-t", str(self.streams), "--blocksize", str(self.blocksize)]
        if self.compress:
            out.append("-C")
        if self.compress_level is not None:
            out += ["--compress-level", str(self.compress_level)]
        if self.sparse:
            out.append("--sparse")
        if self.ioengine != "posix":
            out += ["--ioengine", self.ioengine]
        if self.limit is not None:
            out += ["-l", str(self.limit)]
        return out

    def environment(self) -> dict[str, str]:
        """Variables to set in the escp process environment (the receiver of --local inherits them)."""
        return {FAULT_ENV: self.fault} if self.fault else {}

    def hash_key(self) -> dict[str, Any]:
        d = asdict(self)
        for k in self.HASH_OMIT_UNSET:
            if d.get(k) is None:
                d.pop(k, None)
        return d


@dataclass(frozen=True)
class Scenario:
    name: str
    dataset: str
    escp: EscpOptions
    peers: tuple[str, ...]
    repeats: int
    warmup: int
    ratio_peer: str
    targets: tuple[str, ...] = ()
    group: str | None = None  # sweep name
    x: Any = None  # sweep value
    notes: tuple[str, ...] = field(default_factory=tuple)
    path: PathOptions | None = None  # an emulated WAN path (None: bare loopback)
    tags: tuple[str, ...] = ()  # names `--only` also matches (e.g. "wan")
    on_demand: bool = False  # run only when `--only` selects it
    direction: str = PUSH  # push: every tool copies to the sshd's host; pull: every tool fetches from it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["peers"] = list(self.peers)
        d["targets"] = list(self.targets)
        d["notes"] = list(self.notes)
        d["tags"] = list(self.tags)
        return d

    def matches(self, pattern: str) -> bool:
        """`--only PATTERN`: a glob on the name or the sweep group, or a tag."""
        return (fnmatch.fnmatch(self.name, pattern) or (self.group is not None and fnmatch.fnmatch(self.group, pattern))
                or pattern in self.tags)

    @property
    def hash(self) -> str:
        """Stable digest of what is measured (not of repeat counts, notes or selection)."""
        skip = ("repeats", "warmup", "notes", "targets", "tags", "on_demand")
        key = {k: v for k, v in self.to_dict().items() if k not in skip}
        if self.path is None:
            del key["path"]  # added later: scenarios without a path keep their hashes
        if self.direction == PUSH:
            del key["direction"]  # added later: push scenarios keep their hashes
        key["escp"] = self.escp.hash_key()
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Profile:
    name: str
    datasets: dict[str, dict[str, Any]]
    scenarios: list[Scenario]
    scenario_budget_s: float | None = None  # timed rounds of one scenario should fit in this


def _escp_opts(base: dict[str, Any], over: dict[str, Any]) -> EscpOptions:
    merged = {**base, **over}
    return EscpOptions(**merged)


def load(path: Path = DEFAULT_FILE, profile: str = "quick") -> Profile:
    doc = tomllib.loads(Path(path).read_text())
    profiles = doc.get("profiles", {})
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r}; have {sorted(profiles)}")
    prof = profiles[profile]
    datasets: dict[str, dict[str, Any]] = dict(prof.get("datasets", {}))
    defaults = doc.get("defaults", {})
    out: list[Scenario] = []
    for raw in doc.get("scenario", []):
        if profile not in raw.get("profiles", [profile]):
            continue
        ds = raw["dataset"]  # a name, or a table per profile
        ds = ds.get(profile, "") if isinstance(ds, dict) else ds
        if ds not in datasets:
            raise ValueError(f"scenario {raw['name']}: dataset {ds!r} not in profile {profile}")
        raw_peers = raw.get("peers", ())  # a list, or a table per profile
        peers = tuple(raw_peers.get(profile, ()) if isinstance(raw_peers, dict) else raw_peers)
        unknown = set(peers) - KNOWN_PEERS
        if unknown:
            raise ValueError(f"scenario {raw['name']}: unknown peers {sorted(unknown)}")
        direction = raw.get("direction", PUSH)
        if direction not in (PUSH, PULL) or (direction == PULL and set(peers) - PULL_PEERS):
            raise ValueError(f"scenario {raw['name']}: direction {direction!r} with peers {sorted(peers)} "
                             f"(a pull compares only tools that fetch over the sshd: {sorted(PULL_PEERS)})")
        big = datasets[ds]["kind"] in ("huge", "sparse")
        notes: list[str] = []
        repeats = int(prof.get("repeats", 6))
        if big and "big_file_repeats" in prof:
            repeats = int(prof["big_file_repeats"])
        over_rep = raw.get("repeats", repeats)  # an int, or a table per profile
        repeats = int(over_rep.get(profile, repeats) if isinstance(over_rep, dict) else over_rep)
        if repeats < 6:
            notes.append(f"{repeats} timed repeats (fewer than 6) to fit the {profile} profile time budget")
        ratio_peer = raw.get("ratio_peer", defaults.get("ratio_peer", "cp"))
        if ratio_peer not in peers:
            ratio_peer = peers[0] if peers else ""
        base_opts = {**defaults.get("escp", {}), **raw.get("escp", {})}
        sweep = raw.get("sweep")
        values: list[Any] = sweep["values"] if sweep else [None]
        for v in values:
            over = {sweep["param"]: v} if sweep else {}
            name = f"{raw['name']}-{sweep['param'][0]}{v}" if sweep else raw["name"]
            out.append(
                Scenario(
                    name=name,
                    dataset=ds,
                    escp=_escp_opts(base_opts, over),
                    peers=peers,
                    repeats=repeats,
                    warmup=int(raw.get("warmup", prof.get("warmup", 1))),
                    ratio_peer=ratio_peer,
                    targets=tuple(raw.get("targets", ())),
                    group=raw["name"] if sweep else None,
                    x=v,
                    notes=tuple(notes),
                    path=PathOptions.from_dict(raw["path"]) if "path" in raw else None,
                    tags=tuple(raw.get("tags", ())),
                    on_demand=bool(raw.get("on_demand", False)),
                    direction=direction,
                )
            )
    budget = prof.get("scenario_budget_s")
    return Profile(profile, datasets, out, float(budget) if budget else None)
