"""One authenticated connection to a remote backend: TCP, TLS with a pinned certificate, Auth, Handshake.

No bpy. Used from background threads only: connecting, the TLS handshake and the first answer all
block (with timeouts). The wire rules are in contract/messages.py and contract/framing.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...contract import framing
from ...contract import messages as msg
from ...contract.addresses import is_loopback
from . import known_servers

if TYPE_CHECKING:
    from .remote import RemoteClient

# The key that owns this Blender session's remote jobs: made once per process, so a reconnect in the
# same session can attach to and cancel the jobs it submitted before; never written anywhere.
CLIENT_KEY = secrets.token_hex(32)

CONNECT_TIMEOUT = 5.0
AUTH_TIMEOUT = 10.0  # the server's own limit for the first line
UNREACHABLE = "unreachable"  # client-side error codes, beside the contract's
UNTRUSTED = "untrusted_server"


@dataclass(frozen=True)
class RemoteConfig:
    """A remote backend: ``address`` "host:port" ("[::1]:port" for IPv6), its token, and where pins live.
    ``insecure``: plain TCP, allowed to loopback addresses only (as the server allows it)."""

    address: str
    token: str = field(repr=False)
    known_servers: Path
    insecure: bool = False
    handshake_timeout: float = 20.0
    client_key: str = field(default=CLIENT_KEY, repr=False)

    def make_client(self) -> RemoteClient:
        from .remote import RemoteClient  # remote.py imports this module

        return RemoteClient(self)


class ConfigError(OSError):
    """A remote setting that cannot work (bad address, unreadable token file); ``hint`` says what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


class ConnectError(Exception):
    """Connecting failed; ``code`` is an error code the supervisor shows (``unauthorized``, ...)."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"remote address {address!r} is not HOST:PORT",
                          "enter it like 192.168.1.20:8765 in the add-on preferences")
    return host, int(port)


class Stream:
    """Lines and raw frames over a socket with our own buffer: a read that times out loses nothing, so
    one thread can poll the control connection with short timeouts and still write between polls."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()

    def fill(self) -> None:
        """Read what is there (waiting up to the socket's timeout); EOFError when the peer closed."""
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("the server closed the connection")
        self._buf += data

    def take_line(self, limit: int = framing.MAX_LINE) -> bytes | None:
        """A complete buffered line, or None; LineTooLong (fatal here) past ``limit``."""
        end = self._buf.find(b"\n")
        if end < 0:
            if len(self._buf) > limit:
                raise framing.LineTooLong(limit)
            return None
        if end > limit:
            raise framing.LineTooLong(limit)
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        return line

    def read_message(self, limit: int = framing.MAX_LINE) -> msg.Message:
        """The next message, waiting (under the socket's timeout)."""
        while (line := self.take_line(limit)) is None:
            self.fill()
        return msg.decode(line)

    def read_exact(self, size: int) -> bytes:
        if size > framing.MAX_CHUNK:
            raise framing.FrameError(f"frame of {size} bytes is over the {framing.MAX_CHUNK}-byte limit")
        while len(self._buf) < size:
            self.fill()
        data = bytes(self._buf[:size])
        del self._buf[:size]
        return data

    def send(self, message: msg.Message, payload: bytes = b"") -> None:
        self.sock.sendall(msg.encode(message).encode("utf-8") + payload)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class Connection:
    stream: Stream
    handshake: msg.Handshake
    fingerprint: str | None  # None over plain TCP (insecure)
    latency_ms: float  # from connect to handshake, a first rough figure


def open_connection(config: RemoteConfig, timeout: float = AUTH_TIMEOUT) -> Connection:
    """Connect, check the certificate against its pin BEFORE the token leaves, authenticate and read the
    handshake. Raises ConnectError with a message naming the server."""
    import ssl  # only when a remote backend is used: keeps register() light
    import time

    host, port = parse_address(config.address)
    where = f"the remote backend at {config.address}"
    if config.insecure and not is_loopback(host):
        raise ConnectError(UNREACHABLE, f"{where}: insecure (plain TCP) connections go to loopback addresses only",
                           "turn Insecure off to use TLS, or connect to 127.0.0.1")
    started = time.monotonic()
    try:
        raw = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
        # Requests are small and answered at once: without this, Nagle's algorithm meeting the peer's delayed
        # ACK holds some of them back 40 ms (measured on loopback: most of a small job's remote overhead).
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        raise ConnectError(UNREACHABLE, f"cannot connect to {where}: {exc.strerror or exc}",
                           "check that the server runs (python -m backend serve --listen ...) and the address "
                           "in the add-on preferences") from None
    sock: socket.socket = raw
    fingerprint: str | None = None
    first_use = False
    try:
        raw.settimeout(timeout)
        if config.insecure:
            peer = raw.getpeername()[0]
            if not ipaddress.ip_address(peer.split("%")[0]).is_loopback:
                raise ConnectError(UNREACHABLE, f"{where}: insecure connections go to loopback addresses only")
        else:
            # The server's certificate is self-signed: no CA can vouch for it, the pin does.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                sock = ctx.wrap_socket(raw)
            except (ssl.SSLError, OSError) as exc:
                raise ConnectError(UNREACHABLE, f"TLS with {where} failed: {exc}",
                                   "if the server runs with --insecure, turn Insecure on (loopback only)") from None
            der = sock.getpeercert(binary_form=True) or b""
            fingerprint = hashlib.sha256(der).hexdigest()
            try:
                first_use = known_servers.check(config.known_servers, config.address, fingerprint)
            except known_servers.UntrustedServer as exc:
                raise ConnectError(UNTRUSTED, str(exc),
                                   "only forget the key if you know why the server's certificate changed") from None
        stream = Stream(sock)
        stream.send(msg.Auth(config.token, config.client_key))
        try:
            first = stream.read_message()
        except (EOFError, OSError, framing.LineTooLong, msg.ProtocolError) as exc:
            raise ConnectError(UNREACHABLE, f"{where} did not answer the login: {exc}") from None
        if isinstance(first, msg.Error):
            hint = first.hint or "check the token in the add-on preferences"
            if first.code == msg.UNAUTHORIZED:
                hint = ("check the token in the add-on preferences (or SCENE_DIFFUSION_REMOTE_TOKEN_FILE): it must "
                        "match the server's token file")
            raise ConnectError(first.code, f"{where} refused the connection ({first.code}): {first.message}", hint)
        if not isinstance(first, msg.Handshake):
            raise ConnectError(msg.BAD_MESSAGE, f"{where} answered the login with {first.type}, not a handshake")
        if first_use and fingerprint is not None:
            known_servers.pin(config.known_servers, config.address, fingerprint)
        return Connection(stream, first, fingerprint, (time.monotonic() - started) * 1000)
    except BaseException:
        try:
            sock.close()
        except OSError:
            pass
        raise
