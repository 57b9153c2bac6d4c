"""Moving a remote job's files: uploads into the server's content store, downloads into the local job folder.

No bpy; runs on the remote client's background threads over its own transfer connection (a second
authenticated connection, so big files never hold up the control connection's messages and pings).
A dropped connection is reconnected and the transfer resumes where it stopped: the server keeps partial
uploads, and a partial download is kept beside its target.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ...contract import framing, jobfolder, transfer
from ...contract import messages as msg
from .remote_connection import ConnectError, RemoteConfig, Stream, open_connection

TRIES = 4  # connections per file before giving up
RETRY_DELAY = 0.3
TIMEOUT = 30.0  # one request's answer; a server hashing a big upload answers Stored after that

Progress = Callable[[int], None]  # bytes done so far in the current transfer


class TransferError(Exception):
    """A transfer that cannot succeed (refused by the server, a hash mismatch, the connection lost)."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


class Aborted(Exception):
    """The job was cancelled or the client is closing: stop quietly."""


@dataclass(frozen=True)
class Upload:
    """A job's inputs: name -> sha256 for Submit.files, and the distinct contents to send."""

    files: dict[str, str]
    contents: dict[str, tuple[Path, int]]  # sha256 -> (one local file holding it, size)

    @property
    def total(self) -> int:
        return sum(size for _, size in self.contents.values())


def plan_upload(job_dir: Path) -> Upload:
    paths = transfer.job_inputs(job_dir)
    refs = transfer.manifest(paths)
    contents = {ref.sha256: (paths[name], ref.size) for name, ref in refs.items()}
    return Upload({name: ref.sha256 for name, ref in refs.items()}, contents)


def _shifted(progress: Progress, base: int, done: int) -> None:
    progress(base + done)


def mb(size: int) -> str:
    return f"{size / 1e6:.1f}"


def part_path(target: Path) -> Path:
    """Where a download grows before it is checked and renamed; ".tmp" keeps it out of manifests."""
    return target.with_name(f".{target.name}.part.tmp")


def merge_job_record(job_dir: Path, server: dict[str, Any], address: str) -> dict[str, Any]:
    """The server's job.json as the local one: its status, timings and outputs, with the local id, creation
    time, task and request kept, and where it ran."""
    try:
        local = jobfolder.read_job(job_dir)
    except (OSError, ValueError):
        local = {}
    record = dict(server)
    for key in ("id", "created", "task", "request"):
        if key in local:
            record[key] = local[key]
    record["remote"] = {"server": address}
    jobfolder.write_job(job_dir, record)
    return record


class Transfers:
    """The transfer connection, opened on first use and again after a drop."""

    def __init__(self, config: RemoteConfig, alive: Callable[[], bool]) -> None:
        self.config = config
        self._alive = alive  # False once the control connection is lost or closing: stop retrying
        self._stream: Stream | None = None
        self._lock = threading.Lock()  # one request at a time on the connection
        self.uploaded_bytes = 0  # raw bytes sent in Chunk frames (tests check that dedup sends none)
        self.resumed_from: list[int] = []  # offsets the server had kept of partial uploads, when it had any
        self.downloads_resumed_from: list[int] = []  # the same for partial downloads kept here

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    # -- uploads ---------------------------------------------------------------------------

    def upload(self, plan: Upload, progress: Progress) -> None:
        done = 0
        for sha, (path, size) in plan.contents.items():
            self._retrying(partial(self._upload_one, sha=sha, path=path, size=size,
                                   progress=partial(_shifted, progress, done)))
            done += size

    def _upload_one(self, stream: Stream, *, sha: str, path: Path, size: int, progress: Progress) -> None:
        stream.send(msg.UploadStart(sha, size))
        answer = self._answer(stream, msg.UploadOffset)
        assert isinstance(answer, msg.UploadOffset)
        if answer.offset >= size and size > 0:
            progress(size)
            return  # the server holds it already
        offset = answer.offset
        if offset:
            self.resumed_from.append(offset)
        progress(offset)
        if size == 0:  # nothing to append: one empty chunk makes the server check and store it
            stream.send(msg.Chunk(sha, 0, 0))
        with open(path, "rb") as handle:
            handle.seek(offset)
            while offset < size:
                data = handle.read(min(framing.CHUNK_SIZE, size - offset))
                if not data:
                    raise TransferError(msg.BAD_FILE, f"{path} shrank while it was uploaded")
                stream.send(msg.Chunk(sha, offset, len(data)), data)
                self.uploaded_bytes += len(data)
                offset += len(data)
                progress(offset)
        self._answer(stream, msg.Stored)

    # -- downloads -------------------------------------------------------------------------

    def download(self, job_id: str, name: str, ref: msg.FileRef, target: Path, progress: Progress) -> None:
        """``name`` of job ``job_id`` into ``target``, checked against ``ref``; resumes a partial file."""
        part = part_path(target)
        target.parent.mkdir(parents=True, exist_ok=True)

        def fetch(stream: Stream) -> None:
            offset = part.stat().st_size if part.exists() else 0
            if offset > ref.size:
                part.unlink()
                offset = 0
            if offset:
                self.downloads_resumed_from.append(offset)
            progress(offset)
            if offset < ref.size or ref.size == 0:
                self._receive(stream, job_id, name, offset, part, progress)
            if transfer.sha256_file(part) != ref.sha256:
                part.unlink(missing_ok=True)
                raise TransferError(msg.BAD_FILE, f"{name} of job {job_id} does not match its SHA-256",
                                    "the server's copy changed while it was downloaded; run the job again")

        self._retrying(fetch)
        os.replace(part, target)

    def fetch_small(self, job_id: str, name: str, target: Path) -> None:
        """A file whose hash is not announced (a progress preview): whole, then renamed into place."""
        part = part_path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        part.unlink(missing_ok=True)
        self._retrying(lambda stream: self._receive(stream, job_id, name, 0, part, lambda _n: None))
        os.replace(part, target)

    def _receive(self, stream: Stream, job_id: str, name: str, offset: int, part: Path, progress: Progress) -> None:
        stream.send(msg.Download(job_id, name, offset))
        with open(part, "ab") as out:
            while True:
                frame = self._answer(stream, msg.FileData)
                assert isinstance(frame, msg.FileData)
                if frame.id != job_id or frame.path != name or frame.offset != offset:
                    raise framing.FrameError(f"expected {name} at {offset}, got {frame.path} at {frame.offset}")
                out.write(stream.read_exact(frame.size))
                offset += frame.size
                progress(offset)
                if offset >= frame.total:
                    return

    # -- the connection --------------------------------------------------------------------

    def _answer(self, stream: Stream, kind: type) -> msg.Message:
        """The next answer of type ``kind``; an Error is the server's refusal (not worth a retry)."""
        while True:
            answer = stream.read_message()
            if isinstance(answer, kind):
                return answer
            if isinstance(answer, msg.Error):
                raise TransferError(answer.code, answer.message, answer.hint)
            # anything else (a Pong, a Status) is not ours to answer: skip it

    def _retrying(self, work: Callable[[Stream], None]) -> None:
        with self._lock:
            last = ""
            for attempt in range(TRIES):
                if not self._alive():
                    raise Aborted()
                try:
                    if self._stream is None:
                        self._stream = open_connection(self.config).stream
                        self._stream.sock.settimeout(TIMEOUT)
                    work(self._stream)
                    return
                except ConnectError as exc:
                    if exc.code not in ("unreachable",):
                        raise TransferError(exc.code, exc.message, exc.hint) from None
                    last = exc.message
                except (TransferError, Aborted):
                    self.close()  # the server may have closed it after its refusal; a stream cut mid-file
                    raise
                except (OSError, EOFError, framing.FrameError, framing.LineTooLong, msg.ProtocolError) as exc:
                    last = str(exc) or type(exc).__name__
                self.close()
                time.sleep(RETRY_DELAY * (attempt + 1))
            raise TransferError("connection", f"the transfer connection to {self.config.address} kept failing: {last}",
                                "check the network; the next try resumes where this one stopped")
