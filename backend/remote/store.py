"""Uploaded content by SHA-256: ``<store>/<sha[:2]>/<sha>``, partial uploads in ``<store>/partial/``.

A partial upload survives a dropped connection, so the next UploadStart resumes where it stopped;
content is only ever visible under its hash after the hash was checked.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from contract import messages


class UploadRefused(Exception):
    def __init__(self, code: str, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.fatal = fatal  # the stream position is lost: close the connection


@dataclass(frozen=True)
class ChunkResult:
    complete: bool  # the content is stored under its hash now


class ContentStore:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._partial = root / "partial"
        self._partial.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # appends and moves of one hash never interleave
        # The running SHA-256 of each partial upload, fed chunk by chunk, so completing a file does not read
        # it again; rebuilt from the partial file when a resumed upload finds none (after a server restart).
        self._digests: dict[str, tuple[int, hashlib._Hash]] = {}

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def start(self, sha256: str, size: int) -> int:
        """The offset to upload ``sha256`` from: ``size`` when stored, else what a partial holds."""
        if size > self.max_bytes:
            raise UploadRefused(messages.TOO_LARGE, f"an upload of {size} bytes is over this server's limit "
                                                    f"of {self.max_bytes} bytes (--max-upload-mb)")
        with self._lock:
            if self.has(sha256):
                return size
            partial = self._partial / sha256
            held = partial.stat().st_size if partial.is_file() else 0
            if held > size:  # announced differently before: start over
                partial.unlink()
                self._digests.pop(sha256, None)
                held = 0
            return held

    def append(self, sha256: str, size: int, offset: int, data: bytes) -> ChunkResult:
        """Add ``data`` at ``offset`` to the upload of ``sha256`` (``size`` bytes in all)."""
        with self._lock:
            if self.has(sha256):
                return ChunkResult(True)
            partial = self._partial / sha256
            held = partial.stat().st_size if partial.is_file() else 0
            if offset != held:
                raise UploadRefused(messages.BAD_FILE, f"expected offset {held} for {sha256[:12]}, got {offset}",
                                    fatal=True)
            if offset + len(data) > size:
                raise UploadRefused(messages.TOO_LARGE, f"more bytes than the {size} announced for {sha256[:12]}")
            digest = self._digest_of(sha256, partial, held)
            with open(partial, "ab") as handle:
                handle.write(data)
            digest.update(data)
            self._digests[sha256] = (held + len(data), digest)
            if offset + len(data) < size:
                return ChunkResult(False)
            del self._digests[sha256]
            if digest.hexdigest() != sha256:
                partial.unlink()
                raise UploadRefused(messages.BAD_FILE, "content does not match its SHA-256; upload it again")
            target = self.path(sha256)
            target.parent.mkdir(exist_ok=True)
            os.replace(partial, target)
            return ChunkResult(True)

    def _digest_of(self, sha256: str, partial: Path, held: int) -> hashlib._Hash:
        known = self._digests.get(sha256)
        if known is not None and known[0] == held:
            return known[1]
        digest = hashlib.sha256()
        if held:
            with open(partial, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        return digest
