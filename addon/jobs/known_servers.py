"""Pinned server certificates, trust on first use (like SSH's known_hosts).

A JSON file ``{"host:port": "<64 hex SHA-256 of the server's DER certificate>"}`` in the extension's
user folder. No bpy: the remote client checks a server against it from a background thread.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from ...contract import jobfolder

_lock = threading.Lock()  # the control and the transfer connection may pin at the same moment


class UntrustedServer(Exception):
    """The server's certificate is not the one pinned for its address."""


def display(fingerprint: str) -> str:
    """``SHA256:ab:cd:...`` as people compare fingerprints."""
    return "SHA256:" + ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2))


def load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or unreadable: nothing pinned yet
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def pinned(path: Path, address: str) -> str | None:
    return load(path).get(address)


def check(path: Path, address: str, fingerprint: str) -> bool:
    """True when ``address`` has no pin yet (the caller pins it once the server let it in); raise
    UntrustedServer when it is pinned to another certificate."""
    known = pinned(path, address)
    if known is None:
        return True
    if known != fingerprint:
        raise UntrustedServer(
            f"the server at {address} presented certificate {display(fingerprint)}, not the one pinned on "
            f"first use ({display(known)}). If the server was reinstalled, press Forget Server Key in the "
            "add-on preferences")
    return False


def pin(path: Path, address: str, fingerprint: str) -> None:
    with _lock:
        data = load(path)
        data[address] = fingerprint
        jobfolder.atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))


def forget(path: Path, address: str) -> bool:
    """Drop the pin of ``address``; False when there was none."""
    with _lock:
        data = load(path)
        if data.pop(address, None) is None:
            return False
        jobfolder.atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True))
        return True
