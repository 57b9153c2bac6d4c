"""A remote backend seen as the supervisor sees a local one: the same methods as BackendClient.

No bpy. Three background threads, so Blender's main thread never waits on the network:
- control: connects (TLS, pin, Auth), then polls the control connection, writes what send() queued,
  pings every second and declares the connection lost after 3 s without a byte or at EOF;
- dispatch: passes the server's messages on in order, first downloading what they need (a job's
  files before its Result, a preview before its Progress) and merging the job.json;
- upload: turns each Submit into uploads of the job's inputs, then sends the remote Submit.
Transfers run on a second connection (transfers.py), so pings keep flowing during big files.
"""

from __future__ import annotations

import json
import queue
import select
import socket
import threading
import time
from collections import deque
from functools import partial
from pathlib import Path

from ...contract import framing, jobfolder, transfer
from ...contract import messages as msg
from .client import Inbox
from .remote_connection import CLIENT_KEY, ConfigError, ConnectError, RemoteConfig, Stream, open_connection
from .transfers import Aborted, TransferError, Transfers, mb, merge_job_record, plan_upload

__all__ = ["CLIENT_KEY", "ConfigError", "RemoteClient", "RemoteConfig"]

PING_INTERVAL = 1.0
SILENCE_LIMIT = 3.0  # no byte for this long (pings are answered at once): the connection is lost
POLL = 0.05  # the control thread's read timeout once the socket is readable (a TLS record completing)
WRITE_TIMEOUT = 3.0
LOST = 1  # returncode() once the connection ended


class RemoteClient(Inbox):
    def __init__(self, config: RemoteConfig) -> None:
        self.config = config
        super().__init__()
        self.fingerprint: str | None = None  # the server certificate's SHA-256, once connected
        self.latency_ms: float | None = None  # the latest Ping round trip
        self.lost_reason: str | None = None  # why the connection ended, when it was not stop()
        self._inbound: queue.Queue[msg.Message | None] = queue.Queue()  # from the server, for dispatch
        self._outbox: queue.Queue[msg.Message] = queue.Queue()  # to the server, written by the control thread
        # The control thread waits on the socket and on this pair at once, so a queued message goes out at
        # once instead of at the next poll (measured: that poll was most of a remote job's overhead).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._uploads: queue.Queue[msg.Submit | None] = queue.Queue()
        self._job_dirs: dict[str, Path] = {}
        self._uploading: set[str] = set()  # submitted locally, Submit not yet sent to the server
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._connected = threading.Event()
        self._ended = False  # every message before the end has been passed on
        self._events: deque[str] = deque(maxlen=30)
        self._threads: list[threading.Thread] = []
        self.transfers = Transfers(config, self._alive)

    # -- what the supervisor uses ----------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; returns at once (the handshake arrives as a message)."""
        for target, name in ((self._control, "control"), (self._dispatch, "dispatch"), (self._upload, "upload")):
            thread = threading.Thread(target=target, name=f"scene-diffusion-remote-{name}", daemon=True)
            self._threads.append(thread)
            thread.start()

    @property
    def pid(self) -> int | None:
        return None  # no local process

    def returncode(self) -> int | None:
        """None while connecting or connected; LOST once the connection ended and its messages were passed on."""
        # Only once the supervisor has taken every message: the last one (why it ended) must not be lost.
        return LOST if self._ended and self._messages.empty() else None

    def send(self, message: msg.Message) -> None:
        """Queue ``message``; a local Submit (naming a local job folder) becomes uploads plus a remote Submit."""
        if self._ended or self._closing.is_set():
            raise BrokenPipeError(f"not connected to {self.config.address}")
        if isinstance(message, msg.Submit):
            with self._lock:
                self._job_dirs[message.id] = Path(message.job_dir)
                self._uploading.add(message.id)
            self._uploads.put(message)
        elif isinstance(message, msg.Cancel):
            with self._lock:
                if message.id in self._uploading:  # not on the server yet: the upload thread drops it
                    self._cancelled.add(message.id)
                    return
            self._queue_out(message)
        elif isinstance(message, msg.Shutdown):
            return  # a remote server is not ours to stop; stop() just disconnects
        else:
            self._queue_out(message)

    def attach(self, jobs: dict[str, Path]) -> None:
        """Ask for jobs this session submitted over an earlier connection; their files land in these folders."""
        if not jobs:
            return
        with self._lock:
            self._job_dirs.update(jobs)
        self.send(msg.Attach(sorted(jobs)))

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(list(self._events)[-lines:])

    def stop(self, timeout: float = 1.0) -> None:
        """Disconnect (what send() queued goes out first); the server keeps running submitted jobs."""
        self._closing.set()
        self._wake()
        self._uploads.put(None)
        control = self._threads[0] if self._threads else None
        if control is not None and control is not threading.current_thread():
            control.join(timeout)  # its last flush sends the supervisor's Cancels; the others end on their own
        self.transfers.close()

    # -- threads ---------------------------------------------------------------------------

    def _queue_out(self, message: msg.Message) -> None:
        self._outbox.put(message)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"w")
        except OSError:  # full (the thread is awake anyway) or closed (it has ended)
            pass

    def _readable(self, sock: socket.socket, timeout: float) -> bool:
        """Wait until the server sent something (True) or a message is queued or ``timeout`` passed (False)."""
        pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted inside the SSL object
        if pending is not None and pending():
            return True
        ready, _, _ = select.select([sock, self._wake_r], [], [], max(0.0, timeout))
        if self._wake_r in ready:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass
        return sock in ready

    def _alive(self) -> bool:
        return not self._closing.is_set() and self.lost_reason is None

    def _event(self, text: str) -> None:
        self._events.append(f"{time.strftime('%H:%M:%S')} {text}")

    def _control(self) -> None:
        try:
            try:
                conn = open_connection(self.config)
            except ConnectError as exc:
                self.lost_reason = exc.message
                self._event(exc.message)
                self._inbound.put(msg.Error(None, exc.code, exc.message, exc.hint))
                return
            self.fingerprint = conn.fingerprint
            self._event(f"connected to {self.config.address}"
                        + (f", certificate SHA-256 {conn.fingerprint}" if conn.fingerprint else " (plain TCP)"))
            self._inbound.put(conn.handshake)
            self._connected.set()
            try:
                self._serve(conn.stream)
            except (OSError, EOFError, framing.LineTooLong) as exc:
                if not self._closing.is_set():
                    self.lost_reason = str(exc) or type(exc).__name__
            finally:
                conn.stream.close()
            if self.lost_reason:
                self._event(f"lost: {self.lost_reason}")
        finally:
            self._inbound.put(None)
            for end in (self._wake_r, self._wake_w):
                end.close()

    def _serve(self, stream: Stream) -> None:
        sock = stream.sock
        pings: dict[int, float] = {}
        n, last_ping, last_byte = 0, 0.0, time.monotonic()
        while True:
            closing = self._closing.is_set()
            self._flush(sock, stream)
            if closing:
                return  # after one last flush, so a Cancel from stop() reaches the server
            now = time.monotonic()
            if now - last_ping >= PING_INTERVAL:
                n, last_ping = n + 1, now
                pings[n] = now
                self._write(sock, stream, msg.Ping(n))
            if self._outbox.empty() and self._readable(sock, last_ping + PING_INTERVAL - time.monotonic()):
                sock.settimeout(POLL)
                try:
                    stream.fill()
                    last_byte = time.monotonic()
                except TimeoutError:
                    pass
            while (line := stream.take_line()) is not None:
                self._received(line, pings)
            if time.monotonic() - last_byte > SILENCE_LIMIT:
                raise TimeoutError(f"no answer for {SILENCE_LIMIT:.0f} s")

    def _flush(self, sock: socket.socket, stream: Stream) -> None:
        while True:
            try:
                message = self._outbox.get_nowait()
            except queue.Empty:
                return
            self._write(sock, stream, message)

    def _write(self, sock: socket.socket, stream: Stream, message: msg.Message) -> None:
        sock.settimeout(WRITE_TIMEOUT)
        stream.send(message)

    def _received(self, line: bytes, pings: dict[int, float]) -> None:
        try:
            message = msg.decode(line)
        except msg.ProtocolError as exc:
            text = line.decode("utf-8", "replace")[:200]
            self._inbound.put(msg.Error(None, msg.BAD_MESSAGE, f"the server sent a non-protocol line ({exc}): {text}"))
            return
        if isinstance(message, msg.Pong):
            sent = pings.pop(message.n, None)
            if sent is not None:
                self.latency_ms = (time.monotonic() - sent) * 1000
            for old in [k for k in pings if k < message.n]:
                del pings[old]
            return
        if isinstance(message, msg.Bye):
            raise EOFError("the server is shutting down")
        self._inbound.put(message)

    def _dispatch(self) -> None:
        incomplete: set[str] = set()  # jobs whose files did not all arrive: their Result must not pass
        while (message := self._inbound.get()) is not None:
            if isinstance(message, msg.Files):
                if not self._fetch_files(message):
                    incomplete.add(message.id)
                continue
            if isinstance(message, msg.Result) and message.id in incomplete:
                continue
            if isinstance(message, msg.Progress) and message.preview:
                message = self._fetch_preview(message)
            self._messages.put(message)
        self._ended = True

    def _job_dir(self, job_id: str) -> Path | None:
        with self._lock:
            return self._job_dirs.get(job_id)

    def _fetch_files(self, files: msg.Files) -> bool:
        """Download what the local folder lacks, then merge job.json; False (after an Error, unless the
        connection is gone) when they did not all arrive."""
        job_dir = self._job_dir(files.id)
        if job_dir is None:
            return False  # not a job of this session's
        wanted: dict[str, msg.FileRef] = {}
        for name, ref in files.files.items():
            try:
                target = transfer.resolve_inside(job_dir, name)
            except transfer.BadFileName as exc:
                self._messages.put(msg.Error(files.id, msg.BAD_FILE, f"the server listed a bad file name: {exc}"))
                return False
            if name == jobfolder.JOB_FILE or not _has(target, ref):
                wanted[name] = ref
        total = sum(ref.size for ref in wanted.values())
        done = 0
        try:
            for name, ref in wanted.items():
                target = transfer.resolve_inside(job_dir, name)
                if name == jobfolder.JOB_FILE:  # merged below, never over the local one
                    target = job_dir / f".{jobfolder.JOB_FILE}.remote.tmp"
                self.transfers.download(files.id, name, ref, target,
                                        partial(self._download_progress, files.id, done, total))
                done += ref.size
            server_record = job_dir / f".{jobfolder.JOB_FILE}.remote.tmp"
            if server_record.exists():
                record = json.loads(server_record.read_text(encoding="utf-8"))
                if isinstance(record, dict):
                    merge_job_record(job_dir, record, self.config.address)
                server_record.unlink()
        except Aborted:
            return False  # lost or closing: the supervisor reports that, and a reconnect resumes
        except TransferError as exc:
            if self._alive():
                self._messages.put(msg.Error(files.id, exc.code, f"could not download the results: {exc.message}",
                                             exc.hint or f"they are kept on the server {self.config.address}"))
            return False
        except (OSError, ValueError) as exc:
            self._messages.put(msg.Error(files.id, msg.INTERNAL, f"could not store the results in {job_dir}: {exc}"))
            return False
        return True

    def _fetch_preview(self, progress: msg.Progress) -> msg.Progress:
        job_dir = self._job_dir(progress.id)
        assert progress.preview is not None
        try:
            if job_dir is None:
                raise TransferError(msg.UNKNOWN_JOB, "no local folder")
            self.transfers.fetch_small(progress.id, progress.preview,
                                       transfer.resolve_inside(job_dir, progress.preview))
        except (TransferError, Aborted, transfer.BadFileName, OSError) as exc:
            self._event(f"job {progress.id}: preview {progress.preview} not downloaded: {exc}")
            return msg.Progress(progress.id, progress.step, progress.total, None, progress.message, progress.phase)
        return progress

    def _download_progress(self, job_id: str, base: int, total: int, done: int) -> None:
        self._progress(job_id, "download", base + done, total)

    def _progress(self, job_id: str, phase: str, done: int, total: int) -> None:
        if job_id in self._cancelled or not self._alive():
            raise Aborted()
        verb = "Uploading" if phase == "upload" else "Downloading"
        self._messages.put(msg.Progress(job_id, done, total, message=f"{verb} {mb(done)} / {mb(total)} MB",
                                        phase=phase))

    def _upload(self) -> None:
        while (submit := self._uploads.get()) is not None:
            if not self._connected.wait(timeout=self.config.handshake_timeout) or not self._alive():
                return
            files = self._upload_inputs(submit)
            if files is None and not self._alive():
                return  # lost: the supervisor fails the job; closing: nothing to say
            with self._lock:
                self._uploading.discard(submit.id)
                cancelled = submit.id in self._cancelled
                if files is not None and not cancelled:  # under the lock: a later Cancel goes after it
                    self._queue_out(msg.Submit(submit.id, submit.task, "", submit.params, files))
            if cancelled:
                self._messages.put(msg.Cancelled(submit.id))

    def _upload_inputs(self, submit: msg.Submit) -> dict[str, str] | None:
        """The job's inputs in the server's store: Submit.files, or None after an Error (or a cancel)."""
        try:
            plan = plan_upload(Path(submit.job_dir))
            if plan.total:
                self._progress(submit.id, "upload", 0, plan.total)
            self.transfers.upload(plan, lambda n: self._progress(submit.id, "upload", n, plan.total))
        except Aborted:
            return None
        except TransferError as exc:
            if self._alive():
                self._messages.put(msg.Error(submit.id, exc.code, f"could not upload the job's inputs: {exc.message}",
                                             exc.hint))
            return None
        except OSError as exc:
            self._messages.put(msg.Error(submit.id, msg.BAD_FILE, f"could not read the job's inputs: {exc}"))
            return None
        return plan.files


def _has(target: Path, ref: msg.FileRef) -> bool:
    """Whether the local copy already holds this content."""
    try:
        return target.is_file() and target.stat().st_size == ref.size and transfer.sha256_file(target) == ref.sha256
    except OSError:
        return False
