"""Test Connection without bpy: start (or reuse) the supervisor's client, then read what it learnt.

The operator polls ``poll()`` from a timer, so the connecting happens on the client's threads; a
background script polls it in a loop. Starting the client this way also attaches jobs a lost server
may still hold, like any reconnect.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ...contract import messages as msg
from . import known_servers
from .remote import RemoteClient
from .supervisor import Supervisor


@dataclass(frozen=True)
class ConnectionReport:
    ok: bool
    lines: list[str]

    def text(self) -> str:
        return "; ".join(self.lines)


@dataclass
class ConnectionTest:
    sup: Supervisor
    timeout: float = 20.0
    started: float = field(default_factory=time.monotonic)
    _asked: bool = False

    def poll(self) -> ConnectionReport | None:
        """The report once the handshake, a ping and a Status are in (or it failed); None meanwhile."""
        self.sup.tick()
        client = self.sup.client
        if client is None:
            error = self.sup.last_error
            return ConnectionReport(False, [error.text() if error else "the backend stopped"])
        if time.monotonic() - self.started > self.timeout:
            return ConnectionReport(False, [f"no answer within {self.timeout:.0f} s"])
        hs = client.handshake
        if hs is None:
            return None
        if not self._asked:
            self.sup.server_status = None
            client.send(msg.StatusRequest())
            self._asked = True
        status = self.sup.server_status
        remote = isinstance(client, RemoteClient)
        if status is None or (remote and client.latency_ms is None):
            return None
        return ConnectionReport(True, describe(client, hs, status))


def describe(client: object, hs: msg.Handshake, status: msg.Status) -> list[str]:
    lines = []
    if isinstance(client, RemoteClient):
        lines.append(f"Connected to {client.config.address}: {client.latency_ms or 0:.0f} ms round trip")
        if client.fingerprint:
            lines.append(f"Server key {known_servers.display(client.fingerprint)[:31]}…")
    else:
        lines.append(f"Local backend running (pid {hs.pid})")
    lines.append(f"Device {hs.device} ({hs.dtype}); backend {hs.backend_version}, "
                 f"torch {hs.versions.get('torch', '?')}, diffusers {hs.versions.get('diffusers', '?')}")
    lines.append(f"Queue: {status.waiting} job(s) waiting, {status.clients} client(s) connected, "
                 f"server {status.state}")
    return lines
