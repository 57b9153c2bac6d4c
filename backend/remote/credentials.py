"""The network server's secrets: the shared token, and a self-signed TLS certificate clients pin.

Both are made on first start and kept beside each other (token, server.crt, server.key); the token
file and the key are readable by their owner only.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

CERT_FILE = "server.crt"
KEY_FILE = "server.key"
CERT_YEARS = 10


class CredentialError(Exception):
    """A token or certificate problem the person starting the server must fix; the message says how."""


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    sha256: str  # of the DER certificate, 64 hex digits: what clients pin

    @property
    def fingerprint(self) -> str:
        return display_fingerprint(self.sha256)


def display_fingerprint(hex_digest: str) -> str:
    return "SHA256:" + ":".join(hex_digest[i:i + 2] for i in range(0, len(hex_digest), 2))


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only (it must not exist yet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _check_private(path: Path) -> None:
    if os.name != "posix":
        return  # Windows: the per-user data folder's ACL keeps it private
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialError(f"{path} can be read by other users (mode {stat.filemode(mode)}); "
                              f"run: chmod 600 {path}")


def load_token(path: Path) -> tuple[str, bool]:
    """The token in ``path`` and whether it was just created (secrets.token_urlsafe(32), mode 0600)."""
    created = False
    if not path.exists():
        _write_private(path, (secrets.token_urlsafe(32) + "\n").encode("ascii"))
        created = True
    _check_private(path)
    token = path.read_text(encoding="utf-8").strip()
    if len(token) < 16:
        raise CredentialError(f"the token in {path} is shorter than 16 characters; delete the file and "
                              "start again to get a new one")
    return token, created


def load_certificate(folder: Path) -> Certificate:
    """``folder``/server.crt and server.key, made (self-signed, EC P-256) when either is missing."""
    cert, key = folder / CERT_FILE, folder / KEY_FILE
    if not (cert.is_file() and key.is_file()):
        _make_certificate(cert, key)
    _check_private(key)
    der = ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii"))
    return Certificate(cert, key, hashlib.sha256(der).hexdigest())


def _make_certificate(cert: Path, key: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, socket.gethostname() or "scene-diffusion")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(private.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=365 * CERT_YEARS))
                   .sign(private, hashes.SHA256()))
    for path in (cert, key):
        path.unlink(missing_ok=True)  # a half pair from an interrupted start is replaced whole
    _write_private(key, private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def server_context(certificate: Certificate) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate.cert, certificate.key)
    context.num_tickets = 0  # no session tickets: nothing for the server to write while it reads
    return context
