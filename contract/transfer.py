"""Files that cross a network with a job: names a server accepts, content hashes, a folder's manifest.

Standard library only: the add-on hashes and uploads a job's inputs with these, the server checks
every name with ``check_name`` before it touches its disk, and both build manifests the same way.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from . import jobfolder
from .messages import FileRef

MAX_NAME = 1024
MAX_FILES = 10_000  # per job
_HASH_BLOCK = 1 << 20


class BadFileName(ValueError):
    """A file name a server refuses; the message says why."""


def check_name(name: str) -> PurePosixPath:
    """``name`` as a path inside a job folder, or BadFileName: relative, "/"-separated, no "..", no ".",
    no empty part, no drive, no backslash, no control characters, at most MAX_NAME characters."""
    if not name or len(name) > MAX_NAME:
        raise BadFileName(f"file name must be 1-{MAX_NAME} characters, got {len(name)}")
    if any(ord(c) < 32 or c == "\x7f" for c in name) or "\\" in name or ":" in name:
        raise BadFileName(f"file name {name[:80]!r} holds a control character, a backslash or a colon")
    if name.startswith("/"):
        raise BadFileName(f"file name {name[:80]!r} is absolute; send paths inside the job folder")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise BadFileName(f"file name {name[:80]!r} has an empty, '.' or '..' part")
    return PurePosixPath(name)


def resolve_inside(root: Path, name: str) -> Path:
    """``root / name`` after ``check_name``, refusing any existing part of it that is a link, so a
    job's files stay inside its own folder."""
    relative = check_name(name)
    path = root
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            raise BadFileName(f"file name {name[:80]!r} passes through a link")
    return path


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def job_inputs(job_dir: Path) -> dict[str, Path]:
    """The files a remote job needs from the client's job folder: everything but job.json, the log and
    outputs/, by "/"-separated path inside the folder; links are not followed."""
    skip = {jobfolder.JOB_FILE, jobfolder.LOG_FILE}
    return {name: path for name, path in folder_files(job_dir).items()
            if name not in skip and not name.startswith(jobfolder.OUTPUTS + "/")}


def folder_files(folder: Path) -> dict[str, Path]:
    """Every regular file under ``folder`` (links skipped, temporary ".*.tmp" files skipped), sorted."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not (base / d).is_symlink())
        for filename in sorted(filenames):
            path = base / filename
            if path.is_symlink() or not path.is_file() or (filename.startswith(".") and ".tmp" in filename):
                continue
            found[path.relative_to(folder).as_posix()] = path
    return found


def manifest(files: dict[str, Path]) -> dict[str, FileRef]:
    """Each file's SHA-256 and size."""
    return {name: FileRef(sha256_file(path), path.stat().st_size) for name, path in files.items()}
