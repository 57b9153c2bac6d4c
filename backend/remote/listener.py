"""`python -m backend serve --listen HOST:PORT`: the network server's start, accept loop and stop.

Stdout is for the person starting it (address, certificate fingerprint, how to connect); logs go to
stderr. SIGTERM / SIGINT: stop accepting, cancel the running job, exit 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from backend import __version__
from backend.engine_options import EngineOptions
from backend.remote import address
from backend.remote.connection import Connection, Shared
from backend.remote.credentials import CredentialError, load_certificate, load_token, server_context
from backend.remote.job_folders import JobFolders
from backend.remote.store import ContentStore
from backend.scheduler import Job, Scheduler
from contract import messages
from contract.addresses import is_loopback

log = logging.getLogger("backend.remote")

MAX_CONNECTIONS = 64
JANITOR_S = 1.0  # how often the orphan rule is checked


@dataclass(frozen=True)
class NetworkOptions:
    listen: str
    token_file: Path | None = None  # default: <root>/token
    root: Path | None = None  # default: address.default_root()
    insecure: bool = False
    max_upload_mb: int = 2048
    keep_jobs: int = 200
    orphan_grace_s: float = 120.0
    engine: EngineOptions = field(default_factory=EngineOptions)


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


def serve_network(options: NetworkOptions) -> int:
    try:
        host, port = address.parse_listen(options.listen)
    except address.AddressError as exc:
        return _fail(str(exc))
    if options.insecure and not is_loopback(host):
        return _fail(f"--insecure sends the token and every file in the clear; it is only allowed on a "
                     f"loopback address (127.0.0.1, ::1), not {host}. Drop --insecure to use TLS.")
    root = (options.root or address.default_root()).expanduser().resolve()
    token_file = (options.token_file or root / "token").expanduser().resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        token, created = load_token(token_file)
        certificate = None if options.insecure else load_certificate(token_file.parent)
    except (CredentialError, OSError) as exc:
        return _fail(str(exc))
    if created:
        log.info("made a new token in %s", token_file)

    try:
        engine = options.engine.make()
    except ImportError as exc:
        return _fail(f"the backend cannot import {exc.name}: {exc}; install backend/requirements.txt", 3)
    except Exception as exc:  # noqa: BLE001 - a bad device or registry is a message, not a trace
        return _fail(f"{exc}\n{getattr(exc, 'hint', '')}".strip())

    from backend.diffusion.gpu_check import handshake_warnings

    warnings = handshake_warnings(engine.device, options.engine.device) + engine.warnings
    for warning in warnings:
        log.warning("%s", warning)
    store = ContentStore(root / "store", options.max_upload_mb * 1024 * 1024)
    folders = JobFolders(root / "jobs", store, options.keep_jobs)
    folders.root.mkdir(parents=True, exist_ok=True)
    if stale := folders.mark_stale():
        log.info("marked %d job(s) a previous run left unfinished as failed", stale)

    def prune(_job: Job) -> None:
        scheduler.forget(folders.prune(scheduler.active_dirs()))

    scheduler = Scheduler(finisher=folders.finals, keep_finished=True, on_finished=prune)
    scheduler.engine = engine
    folders.prune(set())

    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.create_server((host, port), family=family, backlog=MAX_CONNECTIONS)
    except OSError as exc:
        return _fail(f"cannot listen on {address.show(host, port)}: {exc}")
    port = listener.getsockname()[1]
    shown = address.show(host, port)
    shared = Shared(token, scheduler, folders, store,
                    messages.Handshake(messages.PROTOCOL_VERSION, __version__, engine.device, engine.dtype,
                                       engine.versions, os.getpid(), warnings, engine.memory_label),
                    server_context(certificate) if certificate else None)
    _banner(shown, token_file, certificate.fingerprint if certificate else None)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    scheduler.start()
    connections: set[Connection] = set()
    lock = threading.Lock()
    threading.Thread(target=_accept, args=(listener, shared, connections, lock, stop), name="listener",
                     daemon=True).start()
    while not stop.wait(JANITOR_S):
        scheduler.cancel_orphans(options.orphan_grace_s)
    log.info("stopping: no new connections, cancelling the running job")
    listener.close()
    scheduler.stop(timeout=30)
    with lock:
        for connection in list(connections):
            connection.close()
    logging.shutdown()
    return 0


def _banner(shown: str, token_file: Path, fingerprint: str | None) -> None:
    mode = "TLS" if fingerprint else "insecure, loopback only"
    lines = [f"Scene Diffusion backend listening on {shown} ({mode})"]
    if fingerprint:
        lines.append(f"Certificate fingerprint: {fingerprint}")
    lines += [
        f"Token file: {token_file}",
        f"To connect, give artists the address {shown} and the contents of the token file.",
        "  In Blender: Preferences > Add-ons > Scene Diffusion > Backend: Remote (address and token);",
    ]
    if fingerprint:
        lines.append("  the add-on shows the fingerprint on first connect: check it matches the one above.")
    lines += [
        f"  Scripts: SCENE_DIFFUSION_REMOTE={shown} SCENE_DIFFUSION_REMOTE_TOKEN_FILE=<a copy of the token file>",
    ]
    print("\n".join(lines), flush=True)


def _accept(listener: socket.socket, shared: Shared, connections: set[Connection], lock: threading.Lock,
            stop: threading.Event) -> None:
    listener.settimeout(0.5)  # wake up now and then to see whether the server is stopping
    while not stop.is_set():
        try:
            raw, peer = listener.accept()
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small answers go out at once (no 40 ms stall)
        except TimeoutError:
            continue
        except OSError:
            if stop.is_set():
                return
            log.exception("accept failed")
            continue
        with lock:
            if len(connections) >= MAX_CONNECTIONS:
                log.warning("refused %s: already %d connections", peer, MAX_CONNECTIONS)
                raw.close()
                continue
            connection = Connection(raw, address.show(str(peer[0]), int(peer[1])), shared)
            connections.add(connection)
        threading.Thread(target=_run, args=(connection, connections, lock), name=f"conn-{peer[1]}",
                         daemon=True).start()


def _run(connection: Connection, connections: set[Connection], lock: threading.Lock) -> None:
    try:
        connection.run()
    finally:
        with lock:
            connections.discard(connection)
