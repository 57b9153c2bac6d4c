"""A raw client of the network backend for tests, and a real `python -m backend serve --listen` process.

``Peer`` speaks the wire protocol by hand (TLS without verification, the fingerprint kept, Auth,
lines and raw frames), so tests can also send what a real client never would.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import ssl
import struct
from pathlib import Path

import devtools.remote_server
from contract import framing, messages

BANNER = "Scene Diffusion backend listening on "


class Peer:
    def __init__(self, port: int, tls: bool = True, timeout: float = 30.0) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.fingerprint = ""
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock: socket.socket = context.wrap_socket(raw)
            self.fingerprint = hashlib.sha256(sock.getpeercert(binary_form=True) or b"").hexdigest()
        else:
            sock = raw
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.payload = b""  # the bytes after the last FileData read

    def auth(self, token: str, client: str | None = None) -> messages.Message:
        """Send Auth; the answer (Handshake, or Error unauthorized)."""
        self.client = client or secrets.token_hex(16)
        self.send(messages.Auth(token, self.client))
        return self.next()

    def send(self, message: messages.Message) -> None:
        self.send_raw(messages.encode(message).encode())

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_chunk(self, sha256: str, offset: int, data: bytes) -> None:
        self.send_raw(messages.encode(messages.Chunk(sha256, offset, len(data))).encode() + data)

    def next(self, timeout: float = 60.0) -> messages.Message:
        self.sock.settimeout(timeout)
        line = framing.read_line(self.reader, framing.MAX_LINE)
        if line is None:
            raise EOFError("the server closed the connection")
        message = messages.decode(line)
        if isinstance(message, messages.FileData):
            self.payload = framing.read_exact(self.reader, message.size)
        return message

    def until(self, kinds: tuple[type, ...], timeout: float = 60.0,
              job_id: str | None = None) -> tuple[messages.Message, list[messages.Message]]:
        """Messages up to the first of ``kinds`` (for ``job_id`` when given); pongs skipped."""
        seen: list[messages.Message] = []
        while True:
            message = self.next(timeout)
            seen.append(message)
            if isinstance(message, kinds) and (job_id is None or getattr(message, "id", None) == job_id):
                return message, seen

    def closed_by_server(self, timeout: float = 10.0) -> bool:
        try:
            self.next(timeout)
        except (EOFError, ConnectionError, ssl.SSLError):
            return True
        return False

    def upload(self, data: bytes, chunk: int = framing.CHUNK_SIZE) -> tuple[str, int]:
        """Upload ``data``; its sha256 and the offset the server answered (len(data): nothing sent)."""
        sha = hashlib.sha256(data).hexdigest()
        self.send(messages.UploadStart(sha, len(data)))
        answer = self.next()
        assert isinstance(answer, messages.UploadOffset), answer
        if answer.offset == len(data):
            return sha, answer.offset
        for start in range(answer.offset, len(data), chunk):
            self.send_chunk(sha, start, data[start:start + chunk])
        stored = self.next()
        assert isinstance(stored, messages.Stored) and stored.sha256 == sha, stored
        return sha, answer.offset

    def download(self, job_id: str, path: str, offset: int = 0) -> bytes | messages.Error:
        self.send(messages.Download(job_id, path, offset))
        parts = []
        while True:
            frame = self.next()
            if isinstance(frame, messages.Error):
                return frame
            assert isinstance(frame, messages.FileData), frame
            parts.append(self.payload)
            if frame.offset + frame.size == frame.total:
                return b"".join(parts)

    def close(self) -> None:
        for step in (self.reader.close, self.sock.close):  # the socket closes only once its file does
            try:
                step()
            except OSError:
                pass

    def reset(self) -> None:
        """Drop the connection abruptly (RST), as a crashed client or a pulled cable does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()


class RemoteServer(devtools.remote_server.RemoteServer):
    """The real server process (devtools/remote_server.py), with raw peers for the tests."""

    def peer(self, authenticate: bool = True) -> Peer:
        peer = Peer(self.port)
        if authenticate:
            hello = peer.auth(self.token)
            assert isinstance(hello, messages.Handshake), hello
        return peer

    def jobs(self) -> list[Path]:
        return sorted(p for owner in self.jobs_root.iterdir() for p in owner.iterdir())

    def stop(self, timeout: float = 30.0) -> int:
        code = super().stop(timeout)
        assert code is not None
        return code
