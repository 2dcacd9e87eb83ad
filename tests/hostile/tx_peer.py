#!/usr/bin/env python3
"""Hostile SENDING SERVER: a program a pulling escp runs as its ssh (`escp -S <wrapper>
host:SRC DEST`), standing in for a malicious remote escp.

It ignores the ssh arguments, reads the SessionInit from stdin like `escp --server` (it
must ask for a sending, listening server), replies with whatever top-level account the
script gives (a hostile remote lies there too), listens on 127.0.0.1, accepts the pulling
client's streams (the real handshake, in the sender's role) and then sends the script in
the file $ESCP_HOSTILE_TX names (a JSON object):

  entries   [{"name": hex, "kind": 0|1, "data": hex, ...}, ...]: each announced in a
            FILE_LIST of its own, then (a file) its blocks on data stream 1 and its
            FILE_END. Optional fields, to break the rules: "fino", "mode", "size" (the
            entry's), "blocks" ([[offset, hex], ...] instead of the honest grid), "digest"
            (hex), "end_blocks" (FILE_END's count), "no_end" (no FILE_END at all)
  count     SessionReply.top_level_count (default: the number of top-level names sent)
  top_dir   SessionReply.top_dir (default false)
  stray     a file number to send a DATA frame for, never announced (after the entries)
  meta_raw  [hex, ...]: raw plaintexts sent on the metadata stream after the entries
  record    a path: the SessionInit's fields as JSON, and what came back (results, abort)

Then EOS on every data stream, SESSION_END, and it reads until SESSION_DONE or ABORT. The
program ends when stdin closes (the client went away) or after LIFETIME seconds.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from escp.protocol import messages as M  # noqa: E402
from escp.protocol import wire as W  # noqa: E402
from escp.protocol.bootstrap import SessionReply, decode_init, encode_reply, parse_header  # noqa: E402
from escp.protocol.report import SessionReport, encode_report  # noqa: E402
from tests.hostile.peer import PeerStream, accept_peer_stream, file_digest  # noqa: E402
from tests.hostile.rx_peer import read_exact  # noqa: E402

LIFETIME = 60.0


def send_entry(meta: PeerStream, data: PeerStream, block: int, fino: int, e: dict) -> None:
    """One entry as the script says: its FILE_LIST, its blocks and its FILE_END."""
    kind, content = e.get("kind", W.KIND_FILE), bytes.fromhex(e.get("data", ""))
    size = e.get("size", len(content) if kind == W.KIND_FILE else 0)
    mode = e.get("mode", 0o644 if kind == W.KIND_FILE else 0o755)
    meta.send(M.encode_file_list([M.FileEntry(fino, bytes.fromhex(e["name"]), kind, mode, size)]))
    if kind != W.KIND_FILE:
        return
    blocks = e.get("blocks", [[off, content[off : off + block].hex()] for off in range(0, len(content), block)])
    for off, chunk in blocks:
        data.data(fino, off, bytes.fromhex(chunk))
    if e.get("no_end"):
        return
    digest = bytes.fromhex(e["digest"]) if "digest" in e else file_digest(fino, content, block)
    meta.send(M.encode_file_end(M.FileEnd(fino, W.STATUS_OK, e.get("end_blocks", len(blocks)), digest)))


def main() -> int:
    cfg = json.loads(Path(os.environ["ESCP_HOSTILE_TX"]).read_text())
    header = read_exact(0, W.BOOT_HEADER.size)
    init = decode_init(read_exact(0, parse_header(header, W.BOOT_SESSION_INIT)))
    record: dict[str, object] = {"server_role": init.server_role.value, "server_link": init.server_link.value,
                                 "sources": [s.hex() for s in init.sources], "report": init.report, "pid": os.getpid()}
    if cfg.get("record"):
        Path(cfg["record"]).write_text(json.dumps(record))
    entries = cfg.get("entries", [])
    tops = {bytes.fromhex(e["name"]).split(b"/")[0] for e in entries}
    lst = socket.socket()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for port in range(init.port_start, init.port_start + init.port_range):
        try:
            lst.bind(("127.0.0.1", port))
            break
        except OSError:
            continue
    lst.listen(16)
    out = sys.stdout.buffer
    out.write(encode_reply(SessionReply("127.0.0.1", lst.getsockname()[1], idle_timeout_ms=init.idle_timeout_ms,
                                        top_level_count=cfg.get("count", len(tops)), top_dir=cfg.get("top_dir", False))))
    out.flush()
    threading.Thread(target=lambda: (read_exact(0, 1 << 30), os._exit(0)), daemon=True).start()
    lst.settimeout(LIFETIME)
    streams = []
    for _ in range(init.streams + 1):
        sock, _ = lst.accept()
        ps = accept_peer_stream(sock, init, role="sender")
        if ps is None:
            return 1
        streams.append(ps)
    streams.sort(key=lambda s: s.index)
    meta, data = streams[0], streams[1:]
    for i, e in enumerate(entries):
        send_entry(meta, data[0], init.block_size, e.get("fino", i), e)
    for raw in cfg.get("meta_raw", []):
        meta.send(bytes.fromhex(raw))
    if "stray" in cfg:
        data[0].data(int(cfg["stray"]), 0, b"unrequested")
    for d in data:
        d.eos()
    meta.send(M.encode_session_end(M.SessionEnd(cfg.get("session_end", len(entries)))))
    got: list[str] = []
    while True:
        msg = meta.recv_message(timeout=LIFETIME)
        if msg is None:
            break
        if isinstance(msg, M.FileResult):
            got.append(f"result {msg.fino} {msg.status}")
        elif isinstance(msg, M.Abort):
            got.append(f"abort {msg.message}")
            break
        elif isinstance(msg, M.SessionDone):
            got.append("done")
            break
    record["got"] = got
    if cfg.get("record"):
        Path(cfg["record"]).write_text(json.dumps(record))
    if init.report:
        out.write(encode_report(SessionReport(files_ok=len(entries))))
        out.flush()
    read_exact(0, 1 << 30)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BrokenPipeError, ConnectionError):
        sys.exit(1)
