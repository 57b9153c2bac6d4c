"""Provenance of the models a job uses: SHA-256 digests (cached) and licences, and the commercial-use check.

Digests are cached by what identifies a file's content on disk without reading it, (st_dev, st_ino, size,
mtime_ns), in one JSON file: ``$SCENE_DIFFUSION_CACHE/digests.json``, else
``~/.cache/scene-diffusion/digests.json``. Hard links (and Hugging Face snapshot symlinks) of one file share
the inode, so they share one entry; a file rewritten in place gets a new mtime and is hashed again.

Licences come from the registry entry (``ModelSpec.licence``), else from the model card's YAML front matter
(``license:``, or ``license_name:`` when the licence is ``other``), as the Hugging Face hub writes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from backend.models.errors import ModelError
from backend.models.families import ModelSpec
from contract import messages

log = logging.getLogger("backend")

ENV_CACHE = "SCENE_DIFFUSION_CACHE"
DIGESTS_FILE = "digests.json"
_CACHE_FORMAT = 1
_CHUNK = 1 << 20
# What a model folder's digest covers: weights, configs, tokenizer files. Not READMEs, images or .git.
DIGEST_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".json", ".txt", ".model", ".yaml")


_LFS_BLOB = re.compile(r"[0-9a-f]{64}")  # (small files' blobs carry their 40-digit git hash instead)


def digests_path() -> Path:
    root = os.environ.get(ENV_CACHE)
    base = Path(root) if root else Path.home() / ".cache" / "scene-diffusion"
    return base / DIGESTS_FILE


def _file_state(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


class _DigestCache:
    """The JSON file of known digests: "dev:ino" -> [size, mtime_ns, sha256]; loaded once, saved atomically."""

    def __init__(self) -> None:
        self.path = digests_path()
        self.entries: dict[str, list[Any]] = {}
        self.changed = False
        self.state = _file_state(self.path)  # what was read: another process's save changes it
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("format") == _CACHE_FORMAT and isinstance(data.get("files"), dict):
                self.entries = data["files"]
        except (OSError, ValueError):  # none yet, or damaged: start afresh
            pass

    def digest(self, file: Path) -> str:
        blob = file.resolve()
        if blob.parent.name == "blobs" and _LFS_BLOB.fullmatch(blob.name):
            # The Hugging Face cache names each LFS file's blob by its SHA-256: nothing to read, even once.
            return blob.name
        stat = file.stat()  # follows symlinks: a snapshot link and its blob are one entry
        key = f"{stat.st_dev}:{stat.st_ino}"
        known = self.entries.get(key)
        if isinstance(known, list) and len(known) == 3 and known[:2] == [stat.st_size, stat.st_mtime_ns]:
            return str(known[2])
        digest = _sha256(file)
        self.entries[key] = [stat.st_size, stat.st_mtime_ns, digest]
        self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(prefix=".digests-", suffix=".tmp", dir=self.path.parent)
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump({"format": _CACHE_FORMAT, "files": self.entries}, out)
            os.replace(temp, self.path)  # readers see the old file or the new one, never half of one
            self.state = _file_state(self.path)
        except OSError as exc:  # a read-only home: digests still work, just uncached
            log.warning("cannot write the digest cache %s: %s", self.path, exc)
        self.changed = False


_loaded: _DigestCache | None = None


def _digest_cache() -> _DigestCache:
    """The digest cache, kept in memory between jobs: read again only when its file changed on disk (another
    process saved, or the cache folder moved), so a job's provenance costs a stat, not a JSON parse."""
    global _loaded
    path = digests_path()
    if _loaded is None or _loaded.path != path or _loaded.state != _file_state(path):
        _loaded = _DigestCache()
    return _loaded


def _sha256(file: Path) -> str:
    total = hashlib.sha256()
    with open(file, "rb") as stream:  # streamed: weights are gigabytes
        while chunk := stream.read(_CHUNK):
            total.update(chunk)
    return total.hexdigest()


def _missing(path: Path) -> ModelError:
    return ModelError(messages.MODEL_MISSING, f"Cannot compute the SHA-256 of {path}: it does not exist.",
                      "Check the model's source in the registry, or download or rebuild the model.")


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file, read in a stream once per content (see the module docstring)."""
    file = Path(path)
    if not file.is_file():
        raise _missing(file)
    cache = _digest_cache()
    digest = cache.digest(file)
    cache.save()
    return digest


def model_digest(path: str | os.PathLike[str]) -> str:
    """A model's SHA-256: a file's digest, or for a folder the SHA-256 over its sorted lines
    ``relative/path NUL file-digest LF`` of its weight, config and tokenizer files (DIGEST_SUFFIXES)."""
    root = Path(path)
    if root.is_file():
        return file_digest(root)
    if not root.is_dir():
        raise _missing(root)
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*")
                   if p.suffix.lower() in DIGEST_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    cache = _digest_cache()
    total = hashlib.sha256()
    for relative, file in files:
        total.update(f"{relative}\0{cache.digest(file)}\n".encode())
    cache.save()
    return total.hexdigest()


# --- licences ------------------------------------------------------------------------------------


def card_licence(folder: Path) -> str:
    """The licence in a model card's front matter (README.md between the first two ``---`` lines)."""
    try:
        text = (folder / "README.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return ""
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if line.strip() == "---":
            break
        match = re.match(r"^(license|license_name)\s*:\s*(.*?)\s*$", line)  # top-level keys only
        if match:
            value = re.sub(r"\s+#.*$", "", match.group(2)).strip().strip("'\"")
            fields[match.group(1)] = value
    licence = fields.get("license", "")
    if licence.lower() == "other" and fields.get("license_name"):
        return fields["license_name"]
    return licence


def licence_of(spec: ModelSpec, path: str | os.PathLike[str] | None) -> str:
    """The model's licence: the registry's, else its model card's (a folder's README.md), else ""."""
    if spec.licence:
        return spec.licence
    if path is None or not Path(path).is_dir():
        return ""
    return card_licence(Path(path))


def is_non_commercial(licence: str) -> bool:
    """Whether a licence id forbids commercial use.

    The rule, on the id lower-cased and split into words at anything not a letter or digit: the word
    ``nc`` (cc-by-nc-4.0, cc-by-nc-sa-4.0, stable-video-diffusion-nc-community ...), ``noncommercial``,
    or ``non`` followed by ``commercial`` (flux-1-dev-non-commercial-license, "Non Commercial"). Whole
    words only, so NCSA or "commercial-use-ok" are not caught. An empty or unknown licence is not refused:
    only a stated restriction is.
    """
    words = [w for w in re.split(r"[^a-z0-9]+", licence.lower()) if w]
    if "nc" in words or "noncommercial" in words:
        return True
    return any(a == "non" and b == "commercial" for a, b in zip(words, words[1:], strict=False))


def check_commercial(name: str, licence: str, commercial: bool) -> None:
    """Refuse a non-commercial model for commercial work (the Commercial Work preference)."""
    if commercial and is_non_commercial(licence):
        raise ModelError(messages.MODEL_LICENCE,
                         f"{name} is under the licence {licence}, which does not allow commercial use, "
                         "and this job is commercial work.",
                         "Turn off Commercial Work in the add-on preferences if the work is not commercial, or "
                         "choose a model whose licence allows commercial use.")


# --- records -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRecord:
    role: str
    name: str
    source: str
    family: str
    kind: str
    sha256: str  # "" when the model is not on this machine
    licence: str
    tiny: bool

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def record_for(role: str, spec: ModelSpec, path: str | os.PathLike[str] | None) -> ModelRecord:
    """What job.json and the EXR headers say about a model: its identity, digest and licence."""
    digest = model_digest(path) if path is not None and Path(path).exists() else ""
    return ModelRecord(role, spec.name, spec.source, spec.family, spec.kind, digest, licence_of(spec, path),
                       spec.tiny)
