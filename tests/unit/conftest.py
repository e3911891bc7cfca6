"""Shared fixtures of the unit tests."""

import socket

import pytest


class LoopbackListener:
    """A TCP port on loopback standing in for a host that must never be contacted.

    Nothing answers: a connection attempt completes its handshake into the
    backlog and is counted when ``accepted`` is read, so the count cannot
    miss an attempt that a background thread had not picked up yet.
    """

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self._count = 0

    @property
    def accepted(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self._count
            self._count += 1
            conn.close()

    def contacted(self) -> bool:
        return self.accepted > 0

    def close(self):
        self.sock.close()


@pytest.fixture
def listener():
    port = LoopbackListener()
    yield port
    port.close()
