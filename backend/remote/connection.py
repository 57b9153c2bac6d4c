"""One network client: TLS, Auth, Handshake, then requests until the connection ends.

Each connection runs on its own thread; anything that goes wrong here closes this connection only.
Replies and the worker's pushes share one write lock, so a frame's header and bytes stay together.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import shutil
import socket
import ssl
import stat
import threading
import traceback
from dataclasses import dataclass, replace
from typing import BinaryIO

from backend.remote.job_folders import JobFolders, SubmitRefused, owner_of
from backend.remote.store import ContentStore, UploadRefused
from backend.scheduler import CancelOutcome, DuplicateJob, Job, Scheduler
from contract import framing, messages, transfer

log = logging.getLogger("backend.remote")

HANDSHAKE_S = 10.0  # TLS handshake and Auth line, together
IDLE_S = 60.0  # no line for this long (the add-on pings every second): the client is gone
AUTH_HINT = "use the token from the server's token file (Preferences > Add-ons > Scene Diffusion > Backend)"
LINE_HINT = "send one JSON object per line, as contract/messages.py defines"


@dataclass(frozen=True)
class Shared:
    """What every connection of one server uses."""

    token: str
    scheduler: Scheduler
    folders: JobFolders
    store: ContentStore
    handshake: messages.Handshake
    tls: ssl.SSLContext | None  # None: --insecure on loopback


class Connection:
    def __init__(self, raw: socket.socket, peer: str, shared: Shared) -> None:
        self._raw = raw
        self._sock: socket.socket = raw
        self.peer = peer
        self._shared = shared
        self._write_lock = threading.Lock()
        self._closed = False
        self._reader: BinaryIO | None = None
        self._uploads: dict[str, int] = {}  # sha256 -> size announced by UploadStart here
        self.owner: str | None = None

    # -- life -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._serve()
        except (OSError, framing.FrameError, ssl.SSLError) as exc:
            log.info("connection %s ended: %s", self.peer, exc)
        except Exception:  # noqa: BLE001 - one bad connection never takes the server down
            log.error("connection %s failed:\n%s", self.peer, traceback.format_exc())
        finally:
            self.close()
            if self.owner is not None:
                self._shared.scheduler.disconnected(self.owner)

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
        for step in (lambda: self._sock.shutdown(socket.SHUT_RDWR), self._sock.close, self._raw.close):
            try:
                step()
            except OSError:
                pass

    def send(self, message: messages.Message, payload: bytes = b"") -> None:
        """Write one message (and a frame's bytes); after a write error the connection is closed and
        later messages are dropped (the job keeps its final one for Attach)."""
        data = messages.encode(message).encode("utf-8") + payload
        with self._write_lock:
            if self._closed:
                return
            try:
                self._sock.sendall(data)
                return
            except (OSError, ValueError) as exc:
                log.info("connection %s: write failed (%s); closing", self.peer, exc)
        self.close()

    # -- start ------------------------------------------------------------------------------

    def _serve(self) -> None:
        # One deadline for the TLS handshake and the Auth line: a silent peer cannot hold a thread.
        timer = threading.Timer(HANDSHAKE_S + 2, self.close)
        timer.daemon = True
        timer.start()
        try:
            self._raw.settimeout(HANDSHAKE_S)
            if self._shared.tls is not None:
                self._sock = self._shared.tls.wrap_socket(self._raw, server_side=True)
            self._reader = self._sock.makefile("rb")
            owner = self._authenticate()
        finally:
            timer.cancel()
        if owner is None:
            return
        self.owner = owner
        self._shared.scheduler.connected(owner)
        self._sock.settimeout(IDLE_S)
        self.send(self._shared.handshake)
        log.info("connection %s: client %s authenticated", self.peer, owner)
        while not self._closed:
            try:
                line = framing.read_line(self._reader, framing.MAX_LINE)
            except framing.LineTooLong as exc:
                self.send(messages.Error(None, messages.TOO_LARGE, str(exc), LINE_HINT))
                continue
            if line is None or not self._handle(line):
                return

    def _authenticate(self) -> str | None:
        """The owner named by a valid Auth line; otherwise one unauthorized Error, and None."""
        assert self._reader is not None
        try:
            line = self._reader.readline(framing.MAX_AUTH_LINE + 1)
        except TimeoutError:
            return self._refuse(f"no Auth line within {HANDSHAKE_S:.0f} s")
        if not line.endswith(b"\n"):
            return self._refuse("the first line is over the limit or incomplete" if line else "no Auth line")
        try:
            auth = messages.decode(line)
        except messages.ProtocolError:
            auth = None
        if not isinstance(auth, messages.Auth):
            return self._refuse("the first line on a connection must be Auth(token, client)")
        if not hmac.compare_digest(auth.token.encode("utf-8"), self._shared.token.encode("utf-8")):
            return self._refuse("wrong token")
        if len(auth.client) < 32:
            return self._refuse("the client key must be at least 32 characters")
        return owner_of(auth.client)

    def _refuse(self, why: str) -> str | None:
        log.warning("connection %s refused: %s", self.peer, why)
        self.send(messages.Error(None, messages.UNAUTHORIZED, f"not authorized: {why}", AUTH_HINT))
        return None

    # -- requests ---------------------------------------------------------------------------

    def _handle(self, line: bytes) -> bool:
        """Act on one line; False when the connection must close."""
        try:
            message = messages.decode(line)
        except messages.ProtocolError as exc:
            if _claimed_type(line) == "chunk":  # its bytes follow: where the next line starts is lost
                self.send(messages.Error(None, messages.BAD_MESSAGE, f"{exc}; closing", LINE_HINT))
                return False
            self.send(messages.Error(None, messages.BAD_MESSAGE, str(exc), LINE_HINT))
            return True
        assert self.owner is not None
        owner, scheduler = self.owner, self._shared.scheduler
        if isinstance(message, messages.Ping):
            self.send(messages.Pong(message.n))
        elif isinstance(message, messages.Chunk):
            return self._chunk(message)
        elif isinstance(message, messages.UploadStart):
            try:
                offset = self._shared.store.start(message.sha256, message.size)
                self._uploads[message.sha256] = message.size
                self.send(messages.UploadOffset(message.sha256, offset))
            except UploadRefused as exc:
                self.send(messages.Error(None, exc.code, exc.message))
        elif isinstance(message, messages.Submit):
            self._submit(message)
        elif isinstance(message, messages.Download):
            found = scheduler.job(owner, message.id)
            if isinstance(found, Job):
                self._download(found, message)
            else:
                self._job_error(message.id, found)
        elif isinstance(message, messages.Cancel):
            self._job_error(message.id, scheduler.cancel(owner, message.id, self.send))
        elif isinstance(message, messages.Attach):
            for job_id in message.ids:
                self._job_error(job_id, scheduler.attach(owner, job_id, self.send))
        elif isinstance(message, messages.StatusRequest):
            self.send(scheduler.status(owner))
        elif isinstance(message, messages.Release):
            scheduler.request_release(owner, self.send)
        elif isinstance(message, messages.Shutdown):
            self.send(messages.Error(None, messages.BAD_MESSAGE, "a remote client cannot stop the server",
                                     "stop it where it runs (Ctrl+C or SIGTERM)"))
        else:
            self.send(messages.Error(None, messages.BAD_MESSAGE,
                                     f"{message.type} is not a request a client sends here", LINE_HINT))
        return True

    def _job_error(self, job_id: str, outcome: CancelOutcome | None) -> None:
        if outcome is CancelOutcome.NOT_YOURS:
            self.send(messages.Error(job_id, messages.NOT_YOURS, f"job {job_id} belongs to another client"))
        elif outcome is CancelOutcome.UNKNOWN:
            self.send(messages.Error(job_id, messages.UNKNOWN_JOB, f"this server has no job {job_id}",
                                     "it may have been pruned, or the server was restarted"))

    def _submit(self, submit: messages.Submit) -> None:
        assert self.owner is not None
        folders, scheduler = self._shared.folders, self._shared.scheduler
        try:
            folders.check(submit)
            if scheduler.known(self.owner, submit.id):
                raise SubmitRefused(messages.BAD_MESSAGE, f"job {submit.id} is already known; use a new id")
            job_dir = folders.create(self.owner, submit)
        except SubmitRefused as exc:
            self.send(messages.Error(submit.id, exc.code, exc.message, exc.hint))
            return
        try:
            scheduler.submit(self.owner, replace(submit, job_dir=str(job_dir)), self.send)
        except DuplicateJob as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            self.send(messages.Error(submit.id, messages.BAD_MESSAGE, str(exc)))

    def _chunk(self, chunk: messages.Chunk) -> bool:
        assert self._reader is not None
        if chunk.size > framing.MAX_CHUNK:
            self.send(messages.Error(None, messages.TOO_LARGE,
                                     f"a chunk of {chunk.size} bytes is over the {framing.MAX_CHUNK}-byte limit; "
                                     "closing"))
            return False
        data = framing.read_exact(self._reader, chunk.size)
        size = self._uploads.get(chunk.sha256)
        if size is None:
            self.send(messages.Error(None, messages.BAD_FILE, f"send UploadStart for {chunk.sha256[:12]} first"))
            return True
        try:
            if self._shared.store.append(chunk.sha256, size, chunk.offset, data).complete:
                self._uploads.pop(chunk.sha256, None)
                self.send(messages.Stored(chunk.sha256))
        except UploadRefused as exc:
            self.send(messages.Error(None, exc.code, exc.message + ("; closing" if exc.fatal else "")))
            return not exc.fatal
        return True

    def _download(self, job: Job, request: messages.Download) -> None:
        try:
            path = transfer.resolve_inside(job.job_dir, request.path)
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        except (transfer.BadFileName, OSError) as exc:
            reason = str(exc) if isinstance(exc, transfer.BadFileName) else "no such file (or a link)"
            self.send(messages.Error(request.id, messages.BAD_FILE, f"cannot send {request.path[:200]!r}: {reason}"))
            return
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or request.offset > info.st_size:
            os.close(fd)
            self.send(messages.Error(request.id, messages.BAD_FILE,
                                     f"cannot send {request.path[:200]!r}: not a regular file, or offset "
                                     f"{request.offset} past its {info.st_size} bytes"))
            return
        with os.fdopen(fd, "rb") as handle:
            total, offset = info.st_size, request.offset
            handle.seek(offset)
            while True:
                data = handle.read(framing.CHUNK_SIZE)
                self.send(messages.FileData(request.id, request.path, offset, len(data), total), data)
                offset += len(data)
                if offset >= total or not data or self._closed:
                    return


def _claimed_type(line: bytes) -> object:
    try:
        data = json.loads(line)
    except ValueError:
        return None
    return data.get("type") if isinstance(data, dict) else None
