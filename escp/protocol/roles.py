"""The three role axes of an escp session; each is a separate parameter of the code.

* `DataRole` — which way the data flows. The SENDER reads sources and sends blocks; the
  RECEIVER checks and writes them. It picks the session core (SenderCore or ReceiverCore)
  and the direction of each stream's keys (the sender seals sender->receiver frames).
* `Origin` — who started whom. The INITIATOR runs ssh (or spawns a local child) and writes
  SessionInit; the SERVER is `escp --server`, which reads SessionInit and replies with
  SessionReply. Only the bootstrap over the ssh pipe depends on it.
* `Link` — who opens the TCP streams. The LISTENER binds a port, sends each connection's
  challenge, checks HELLO and sends ACCEPT; the CONNECTOR connects and answers the
  challenge with HELLO.

Protocol version 1 pairs them one way only: the initiator is the sender and the
connector, the server is the receiver and the listener (docs/protocol.md §1).
"""

from __future__ import annotations

from enum import Enum


class DataRole(Enum):
    SENDER = "sender"
    RECEIVER = "receiver"

    @property
    def peer(self) -> DataRole:
        return DataRole.RECEIVER if self is DataRole.SENDER else DataRole.SENDER


class Origin(Enum):
    INITIATOR = "initiator"
    SERVER = "server"


class Link(Enum):
    LISTENER = "listener"
    CONNECTOR = "connector"
