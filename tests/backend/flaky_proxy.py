"""A TCP proxy on loopback that can drop its connections: a network that fails on purpose.

Sits between a real client and a real server (TLS passes through untouched). ``drop_all()``
resets every open connection, as a pulled cable or a Wi-Fi hand-over would;
``cut_after={k: n}`` (or ``drop_after(n)`` for the next one) resets connection number ``k``
once ``n`` bytes went from client to server (mid-upload), ``cut_down_after`` once ``n`` bytes
came back (mid-download).
"""

from __future__ import annotations

import socket
import struct
import threading


class FlakyProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1", cut_after: dict[int, int] | None = None,
                 cut_down_after: dict[int, int] | None = None) -> None:
        self.upstream = (host, upstream_port)
        self._cut_after = dict(cut_after or {})  # connection number (from 0) -> client bytes it may carry
        self._cut_down_after = dict(cut_down_after or {})  # ... -> server bytes it may carry (mid-download)
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._drop_after: int | None = None
        self.connections = 0
        self.drops = 0
        self.sent_upstream = 0
        threading.Thread(target=self._accept, name="flaky-proxy", daemon=True).start()

    @property
    def address(self) -> str:
        return f"{self.upstream[0]}:{self.port}"

    def drop_after(self, upstream_bytes: int) -> None:
        """Reset the next connection once it has carried ``upstream_bytes`` from client to server."""
        with self._lock:
            self._drop_after = upstream_bytes

    def drop_all(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
            self.drops += 1 if sockets else 0
        for sock in sockets:
            _reset(sock)

    def close(self) -> None:
        self._listener.close()
        self.drop_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                _reset(client)
                continue
            server.settimeout(None)
            with self._lock:
                limit, self._drop_after = self._drop_after, None
                limit = self._cut_after.pop(self.connections, limit)
                down_limit = self._cut_down_after.pop(self.connections, None)
                self.connections += 1
                self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, limit, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, down_limit, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, limit: int | None, upstream: bool) -> None:
        carried = 0
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if limit is not None and carried + len(data) >= limit:
                    target.sendall(data[: max(0, limit - carried)])
                    with self._lock:
                        self.drops += 1
                    # The receiver gets every byte up to the cut, then the end of the stream; the sender a reset.
                    # A reset on the receiver's side would throw away what it had not read yet, which makes where
                    # the cut lands depend on how busy the machine is. The other pump resets both when it ends.
                    _end_stream(target)
                    _reset(source)
                    return
                target.sendall(data)
                carried += len(data)
                if upstream:
                    with self._lock:
                        self.sent_upstream += len(data)
        except OSError:
            pass
        _reset(source)
        _reset(target)


def _end_stream(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0), as a broken network looks to both ends."""
    for step in (lambda: sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)),
                 lambda: sock.shutdown(socket.SHUT_RDWR),  # wakes the pump thread blocked in recv on it
                 sock.close):
        try:
            step()
        except OSError:
            pass
