"""Deterministic, seeded benchmark datasets with a manifest.

Each dataset lives in datasets/<name>/: the files under data/ and a manifest.json holding the
spec, the generator version, and every file's relative path, size and xxh3-128 digest. A dataset
whose manifest matches the requested spec and generator version (and whose files still have the
recorded sizes) is reused, not rebuilt.

Kinds:
  huge    one big file; content "random" (AES-CTR keystream from the seed: fast and seeded) or
          "text" (text-like, compressible: slices of a seeded word pool, one header line per MiB)
  tiny    many 0..max_size files spread over a two-level directory tree
  sparse  large files that are mostly holes, with seeded data islands
  mixed   a few large files, many small ones, deep directories, long names
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

GENERATOR_VERSION = 1
MANIFEST = "manifest.json"
CHUNK = 64 << 20  # generation / hashing chunk size
MiB = 1 << 20

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will "
    "transfer block stream sender receiver checksum buffer network socket offset digest latency "
    "throughput window frame cipher packet kernel thread session metadata manifest directory "
    "error retry timeout verify encrypt decrypt compress sparse file path size count rate host"
).split()


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, '/'-separated
    size: int
    digest: str  # xxh3_128 hex


def parse_size(text: str | int) -> int:
    """'1G', '64M', '4K', 123 -> bytes (binary multiples)."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if s and s[-1] in mult:
        return int(float(s[:-1]) * mult[s[-1]])
    return int(s)


# ---------------------------------------------------------------- content sources


def _keystream(seed: str) -> Iterator[memoryview]:
    """Endless seeded pseudo-random bytes in CHUNK pieces (AES-128-CTR of zeros)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = hashlib.sha256(f"escp-dataset:{seed}".encode()).digest()[:16]
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    zeros = bytes(CHUNK)
    out = bytearray(CHUNK + 16)
    view = memoryview(out)
    while True:
        n = enc.update_into(zeros, out)
        yield view[:n]


def _text_pool(seed: str, size: int = 4 * MiB) -> bytes:
    """A seeded pool of text lines (doubled so any slice of `size` bytes can wrap)."""
    rng = random.Random(f"text:{seed}")
    lines: list[str] = []
    total = 0
    while total < size:
        n = rng.randint(4, 16)
        line = " ".join(rng.choice(_WORDS) for _ in range(n)) + (".\n" if rng.random() < 0.7 else ",\n")
        lines.append(line)
        total += len(line)
    pool = "".join(lines).encode()[:size]
    return pool + pool


def _text_stream(seed: str) -> Iterator[bytes]:
    """Endless text-like content, one MiB at a time, each MiB a fresh slice of the pool."""
    pool = _text_pool(seed)
    half = len(pool) // 2
    rng = random.Random(f"slices:{seed}")
    i = 0
    while True:
        header = f"== block {i} ==\n".encode()
        start = rng.randrange(half)
        yield header + pool[start : start + MiB - len(header)]
        i += 1


def _write_stream(path: Path, size: int, stream: Iterator[Any]) -> str:
    """Write `size` bytes from `stream` to `path`; return the xxh3-128 digest."""
    h = xxhash.xxh3_128()
    left = size
    with open(path, "wb", buffering=0) as f:
        while left > 0:
            chunk = next(stream)
            piece = chunk[: min(left, len(chunk))]
            f.write(piece)
            h.update(piece)
            left -= len(piece)
    return h.hexdigest()


# ---------------------------------------------------------------- digests


_ZEROS = b""
_BUF: bytearray | None = None
HASH_CHUNK = 8 << 20


def file_digest(path: Path) -> str:
    """xxh3-128 of a file's content; holes (SEEK_DATA/SEEK_HOLE) are hashed without reading them."""
    global _ZEROS, _BUF
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        st = os.fstat(fd)
        size = st.st_size
        if size <= HASH_CHUNK and st.st_blocks * 512 >= size:  # small, not sparse: one read
            return xxhash.xxh3_128(f.read()).hexdigest()
        if _BUF is None:
            _BUF = bytearray(HASH_CHUNK)
            _ZEROS = bytes(HASH_CHUNK)
        h = xxhash.xxh3_128()
        view = memoryview(_BUF)
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains (or SEEK_DATA unsupported -> read all)
                data = size if _seek_supported(fd) else pos
            while pos < data:  # hole: feed zeros
                n = min(HASH_CHUNK, data - pos)
                h.update(_ZEROS[:n] if n < HASH_CHUNK else _ZEROS)
                pos += n
            if pos >= size:
                break
            try:
                hole = os.lseek(fd, pos, os.SEEK_HOLE)
            except OSError:
                hole = size
            while pos < hole:
                n = os.preadv(fd, [view[: min(HASH_CHUNK, hole - pos)]], pos)
                if n <= 0:
                    raise OSError(f"short read in {path} at {pos}")
                h.update(view[:n])
                pos += n
    return h.hexdigest()


def _seek_supported(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_HOLE)
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- generators


def _gen_huge(data: Path, spec: dict[str, Any], seed: str) -> list[FileEntry]:
    size = parse_size(spec["size"])
    content = spec.get("content", "random")
    stream: Iterator[Any] = _keystream(seed) if content == "random" else _text_stream(seed)
    name = spec.get("filename", "huge.bin")
    digest = _write_stream(data / name, size, stream)
    return [FileEntry(name, size, digest)]


def _small_files(
    data: Path, rng: random.Random, count: int, max_size: int, pool: bytes, dir_of: Any, name_of: Any
) -> list[FileEntry]:
    entries = []
    made: set[str] = set()
    for i in range(count):
        rel_dir = dir_of(i)
        if rel_dir not in made:
            (data / rel_dir).mkdir(parents=True, exist_ok=True)
            made.add(rel_dir)
        size = rng.randint(0, max_size)
        start = rng.randrange(len(pool) - max_size)
        content = pool[start : start + size]
        rel = f"{rel_dir}/{name_of(i)}" if rel_dir else name_of(i)
        with open(data / rel, "wb") as f:
            f.write(content)
        entries.append(FileEntry(rel, size, xxhash.xxh3_128(content).hexdigest()))
    return entries


def _gen_tiny(data: Path, spec: dict[str, Any], seed: str) -> list[FileEntry]:
    count = int(spec["files"])
    max_size = parse_size(spec.get("max_size", "4K"))
    per_dir = int(spec.get("files_per_dir", 100))
    rng = random.Random(f"tiny:{seed}")
    pool = bytes(next(_keystream(seed))[: 4 * MiB])

    def dir_of(i: int) -> str:
        d = i // per_dir
        return f"d{d // 100:03d}/d{d % 100:02d}"

    return _small_files(data, rng, count, max_size, pool, dir_of, lambda i: f"f{i:06d}.dat")


def _gen_sparse(data: Path, spec: dict[str, Any], seed: str) -> list[FileEntry]:
    files = int(spec.get("files", 1))
    apparent = parse_size(spec["apparent"]) // files
    allocated = parse_size(spec["allocated"]) // files
    island = parse_size(spec.get("island", "1M"))
    islands = max(1, allocated // island)
    rng = random.Random(f"sparse:{seed}")
    stream = _keystream(seed)
    pool = bytes(next(stream)[: island * 4])
    entries = []
    for n in range(files):
        name = f"sparse{n:02d}.img"
        slot = apparent // islands
        offsets = sorted(k * slot + rng.randrange(0, max(1, slot - island)) for k in range(islands))
        with open(data / name, "wb") as f:
            f.truncate(apparent)
            for off in offsets:
                start = rng.randrange(len(pool) - island)
                n_bytes = min(island, apparent - off)
                os.pwrite(f.fileno(), pool[start : start + n_bytes], off)
        entries.append(FileEntry(name, apparent, file_digest(data / name)))
    return entries


def _gen_mixed(data: Path, spec: dict[str, Any], seed: str) -> list[FileEntry]:
    rng = random.Random(f"mixed:{seed}")
    entries = []
    large_size = parse_size(spec.get("large_size", "64M"))
    stream = _keystream(f"mixed:{seed}")
    for i in range(int(spec.get("large_files", 3))):
        rel = f"large/big{i}.bin"
        (data / "large").mkdir(exist_ok=True)
        entries.append(FileEntry(rel, large_size, _write_stream(data / rel, large_size, stream)))
    depth = int(spec.get("depth", 12))
    name_len = int(spec.get("name_len", 200))
    small = int(spec.get("small_files", 2000))
    max_size = parse_size(spec.get("max_size", "64K"))
    pool = bytes(next(stream)[: 4 * MiB])
    branches = max(1, int(spec.get("branches", 8)))

    def dir_of(i: int) -> str:
        b = i % branches
        levels = 1 + (i // branches) % depth
        return "/".join(f"lvl{k}_b{b}" for k in range(levels))

    def name_of(i: int) -> str:
        stem = f"f{i:06d}_"
        if i % 10 == 0:  # every tenth file gets a long name
            return (stem + "long_name_" * 30)[:name_len] + ".txt"
        return stem + "small.txt"

    entries += _small_files(data, rng, small, max_size, pool, dir_of, name_of)
    return entries


GENERATORS = {"huge": _gen_huge, "tiny": _gen_tiny, "sparse": _gen_sparse, "mixed": _gen_mixed}


# ---------------------------------------------------------------- manifest + build


@dataclass
class Dataset:
    name: str
    root: Path  # datasets/<name>
    spec: dict[str, Any]
    files: list[FileEntry]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def file_count(self) -> int:
        return len(self.files)

    @property
    def single_file(self) -> bool:
        return len(self.files) == 1 and "/" not in self.files[0].path

    def source(self) -> Path:
        """What to hand to a copy tool: the one file, or the data directory."""
        return self.data / self.files[0].path if self.single_file else self.data


def _manifest_matches(root: Path, spec: dict[str, Any]) -> Dataset | None:
    path = root / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if doc.get("generator_version") != GENERATOR_VERSION or doc.get("spec") != spec:
        return None
    files = [FileEntry(**f) for f in doc["files"]]
    # cheap staleness check: every file still exists with its recorded size
    for f in files:
        try:
            if (root / "data" / f.path).stat().st_size != f.size:
                return None
        except OSError:
            return None
    return Dataset(root.name, root, spec, files)


def ensure_dataset(base: Path, name: str, spec: dict[str, Any], *, log: Any = print) -> Dataset:
    """Return the dataset `name`, generating it under base/<name> unless an up-to-date one exists."""
    root = base / name
    found = _manifest_matches(root, spec)
    if found is not None:
        return found
    kind = spec["kind"]
    if kind not in GENERATORS:
        raise ValueError(f"dataset {name}: unknown kind {kind!r}")
    t0 = time.perf_counter()
    # generate into a fresh directory (never rm -rf then recreate in place: slow on this machine)
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f"data.new-{os.getpid()}-{time.monotonic_ns()}"
    staging.mkdir()
    seed = str(spec.get("seed", name))
    files = GENERATORS[kind](staging, spec, seed)
    old = root / "data"
    if old.exists():
        trash = root / f"data.old-{time.monotonic_ns()}"
        old.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
    staging.rename(old)
    doc = {
        "schema": 1,
        "name": name,
        "generator_version": GENERATOR_VERSION,
        "spec": spec,
        "total_bytes": sum(f.size for f in files),
        "file_count": len(files),
        "digest_algorithm": "xxh3_128",
        "generated_s": round(time.perf_counter() - t0, 3),
        "files": [f.__dict__ for f in files],
    }
    tmp = root / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.rename(root / MANIFEST)
    log(f"dataset {name}: generated {len(files)} files, {doc['total_bytes']} bytes in {doc['generated_s']} s")
    return Dataset(name, root, spec, files)


def main(argv: list[str] | None = None) -> int:
    from harness import scenarios

    ap = argparse.ArgumentParser(prog="python -m harness datasets", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick", help="scenario profile (quick|full)")
    ap.add_argument("--scenarios", type=Path, default=scenarios.DEFAULT_FILE)
    ap.add_argument("--dir", type=Path, default=Path("datasets"))
    ap.add_argument("names", nargs="*", help="only these datasets")
    args = ap.parse_args(argv)
    specs = scenarios.load(args.scenarios, args.profile).datasets
    for name, spec in specs.items():
        if args.names and name not in args.names:
            continue
        ds = ensure_dataset(args.dir, name, spec)
        print(f"{name}: {ds.file_count} files, {ds.total_bytes} bytes -> {ds.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
