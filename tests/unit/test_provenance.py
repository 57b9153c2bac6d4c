"""Model provenance: cached SHA-256 digests, model-card licences, the commercial-use rule (temp files only)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from backend.models import provenance
from backend.models.errors import ModelError
from backend.models.families import ModelSpec
from backend.models.provenance import (
    ModelRecord,
    check_commercial,
    file_digest,
    is_non_commercial,
    licence_of,
    model_digest,
    record_for,
)
from contract import messages


@pytest.fixture(autouse=True)
def digest_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(provenance.ENV_CACHE, str(tmp_path / "cache"))
    return tmp_path / "cache" / provenance.DIGESTS_FILE


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rewrite_keeping_stat(file: Path, data: bytes) -> None:
    """New content of the same size with the old mtime: only the cache can still answer the old digest."""
    stat = file.stat()
    assert len(data) == stat.st_size
    file.write_bytes(data)
    os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_digest_is_sha256_of_the_content(tmp_path: Path) -> None:
    file = tmp_path / "w.safetensors"
    data = os.urandom(3 * 1024 * 1024 + 17)  # several read chunks
    file.write_bytes(data)
    assert file_digest(file) == sha(data)
    assert file_digest(str(file)) == sha(data)


def test_digest_is_cached_until_the_file_changes(tmp_path: Path, digest_cache: Path) -> None:
    file = tmp_path / "w.bin"
    file.write_bytes(b"a" * 64)
    first = file_digest(file)
    entries = json.loads(digest_cache.read_text(encoding="utf-8"))["files"]
    assert [entry[2] for entry in entries.values()] == [first]
    rewrite_keeping_stat(file, b"b" * 64)
    assert file_digest(file) == first  # answered from the cache: the file was not read
    os.utime(file, ns=(file.stat().st_atime_ns, file.stat().st_mtime_ns + 1_000_000))  # touch
    assert file_digest(file) == sha(b"b" * 64)


def test_cached_digest_does_not_open_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "w.bin"
    file.write_bytes(b"weights")
    expected = file_digest(file)
    opened: list[str] = []
    real_open = open

    def counting_open(name: object, *args: object, **kwargs: object) -> object:
        opened.append(str(name))
        return real_open(name, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", counting_open)
    assert file_digest(file) == expected
    assert str(file) not in opened


def test_hard_links_share_one_entry(tmp_path: Path, digest_cache: Path) -> None:
    file = tmp_path / "a.safetensors"
    file.write_bytes(b"x" * 100)
    link = tmp_path / "job" / "inputs" / "a.safetensors"
    link.parent.mkdir(parents=True)
    os.link(file, link)
    digest = file_digest(file)
    rewrite_keeping_stat(file, b"y" * 100)  # the link sees the same new bytes and the same stat
    assert file_digest(link) == digest  # the entry made through the other name answers
    assert len(json.loads(digest_cache.read_text(encoding="utf-8"))["files"]) == 1


def test_cache_is_kept_in_memory_and_read_again_when_another_process_saves(
        tmp_path: Path, digest_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "w.bin"
    file.write_bytes(b"a" * 32)
    first = file_digest(file)
    reads: list[Path] = []
    real_read = Path.read_text

    def counting_read(self: Path, *args: object, **kwargs: object) -> str:
        reads.append(self)
        return real_read(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", counting_read)
    assert file_digest(file) == first and digest_cache not in reads  # a stat, no JSON parse
    # Another process saves its own cache (a new file, as os.replace makes): this process reads it again.
    data = json.loads(real_read(digest_cache, encoding="utf-8"))
    data["files"] = {key: [*entry[:2], "f" * 64] for key, entry in data["files"].items()}
    other = digest_cache.with_suffix(".other")
    other.write_text(json.dumps(data), encoding="utf-8")
    os.replace(other, digest_cache)
    assert file_digest(file) == "f" * 64 and digest_cache in reads


def test_damaged_cache_file_is_ignored(tmp_path: Path, digest_cache: Path) -> None:
    digest_cache.parent.mkdir(parents=True)
    digest_cache.write_text("{not json", encoding="utf-8")
    file = tmp_path / "w.bin"
    file.write_bytes(b"data")
    assert file_digest(file) == sha(b"data")
    assert json.loads(digest_cache.read_text(encoding="utf-8"))["format"] == 1  # rewritten whole


def test_missing_file_is_model_missing(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        file_digest(tmp_path / "nope.safetensors")
    assert caught.value.code == messages.MODEL_MISSING and "nope.safetensors" in caught.value.message
    with pytest.raises(ModelError):
        model_digest(tmp_path / "no-folder")


def make_model(folder: Path) -> Path:
    (folder / "unet").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}', encoding="utf-8")
    (folder / "unet" / "config.json").write_text("{}", encoding="utf-8")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x01" * 32)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# A model\n", encoding="utf-8")
    return folder


def test_folder_digest(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    lines = sorted(f"{p.relative_to(folder).as_posix()}\0{sha(p.read_bytes())}\n"
                   for p in folder.rglob("*") if p.is_file() and p.name != "README.md")
    expected = sha("".join(lines).encode())
    assert model_digest(folder) == expected
    assert model_digest(make_model(tmp_path / "copy")) == expected  # where it lies does not matter
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n", encoding="utf-8")
    assert model_digest(folder) == expected  # the card is not part of the model
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"\x02" * 33)
    changed = model_digest(folder)
    assert changed != expected
    (folder / "unet" / "diffusion_pytorch_model.safetensors").rename(folder / "unet" / "renamed.safetensors")
    assert model_digest(folder) not in (expected, changed)  # names count too
    assert model_digest(weights.parent / "renamed.safetensors") == sha(b"\x02" * 33)  # a file: its own digest


@pytest.mark.parametrize("card, licence", [
    ("---\nlicense: creativeml-openrail-m\ntags:\n- art\n---\n", "creativeml-openrail-m"),
    ("---\nlicense: \"cc-by-nc-4.0\"  # from the paper\n---\n", "cc-by-nc-4.0"),
    ("---\nlicense: other\nlicense_name: flux-1-dev-non-commercial-license\n---\n",
     "flux-1-dev-non-commercial-license"),
    ("---\nlicense: other\n---\n", "other"),
    ("---\ntags:\n  license: mit\n---\n", ""),  # nested: not the model's licence
    ("# no front matter\nlicense: mit\n", ""),
    ("---\nlibrary_name: diffusers\n---\nlicense: mit\n", ""),  # after the front matter: prose
])
def test_licence_from_the_model_card(tmp_path: Path, card: str, licence: str) -> None:
    (tmp_path / "README.md").write_text(card, encoding="utf-8")
    spec = ModelSpec("m", str(tmp_path), "sd15", "text_to_image")
    assert licence_of(spec, tmp_path) == licence


def test_registry_licence_wins_and_missing_cards_are_empty(tmp_path: Path) -> None:
    make_model(tmp_path / "m")
    spec = ModelSpec("m", str(tmp_path / "m"), "sd15", "text_to_image", licence="openrail++")
    assert licence_of(spec, tmp_path / "m") == "openrail++"
    plain = ModelSpec("m", str(tmp_path / "m"), "sd15", "text_to_image")
    assert licence_of(plain, tmp_path / "m") == "mit"
    assert licence_of(plain, None) == ""
    assert licence_of(plain, tmp_path / "empty-or-missing") == ""


@pytest.mark.parametrize("licence, refused", [
    ("cc-by-nc-4.0", True), ("cc-by-nc-sa-4.0", True), ("CC-BY-NC-ND-4.0", True),
    ("flux-1-dev-non-commercial-license", True), ("stable-video-diffusion-nc-community", True),
    ("Non Commercial Research", True), ("noncommercial", True), ("some_non_commercial_terms", True),
    ("cc-by-4.0", False), ("mit", False), ("apache-2.0", False), ("creativeml-openrail-m", False),
    ("openrail++", False), ("ncsa", False), ("other", False), ("", False), ("commercial-ok", False),
])
def test_non_commercial_rule(licence: str, refused: bool) -> None:
    assert is_non_commercial(licence) is refused


def test_check_commercial() -> None:
    check_commercial("sd15", "creativeml-openrail-m", commercial=True)
    check_commercial("flux-dev", "flux-1-dev-non-commercial-license", commercial=False)  # personal work: fine
    with pytest.raises(ModelError) as caught:
        check_commercial("Model 'flux-dev'", "flux-1-dev-non-commercial-license", commercial=True)
    error = caught.value
    assert error.code == messages.MODEL_LICENCE
    assert "'flux-dev'" in error.message and "flux-1-dev-non-commercial-license" in error.message
    assert "commercial use" in error.message
    assert "Turn off Commercial Work in the add-on preferences" in error.hint
    assert "choose a model whose licence allows commercial use" in error.hint


def test_record_for(tmp_path: Path) -> None:
    folder = make_model(tmp_path / "m")
    spec = ModelSpec("base", str(folder), "sd15", "text_to_image", tiny=True)
    record = record_for("text_to_image", spec, folder)
    assert record == ModelRecord("text_to_image", "base", str(folder), "sd15", "text_to_image",
                                 model_digest(folder), "mit", True)
    assert record.as_json() == {"role": "text_to_image", "name": "base", "source": str(folder), "family": "sd15",
                                "kind": "text_to_image", "sha256": model_digest(folder), "licence": "mit",
                                "tiny": True}
    json.dumps(record.as_json())
    remote = ModelSpec("hub", "owner/model", "sdxl", "text_to_image", licence="openrail++")
    assert record_for("text_to_image", remote, None).as_json()["sha256"] == ""
    assert record_for("text_to_image", remote, None).licence == "openrail++"


def test_a_hugging_face_blob_is_named_by_its_sha256_and_not_read(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    content = b"weights of a downloaded model"
    blobs = tmp_path / "models--owner--name" / "blobs"
    blobs.mkdir(parents=True)
    blob = blobs / hashlib.sha256(content).hexdigest()
    blob.write_bytes(content)
    snapshot = tmp_path / "models--owner--name" / "snapshots" / "abc123" / "unet"
    snapshot.mkdir(parents=True)
    (snapshot / "diffusion_pytorch_model.safetensors").symlink_to(blob)
    small = blobs / ("1" * 40)  # a small file's blob: its git hash, so read as usual
    small.write_text("{}")
    (snapshot / "config.json").symlink_to(small)

    def unread(path: Path) -> str:
        if path.resolve() == blob:
            raise AssertionError("the LFS blob was read")
        return hashlib.sha256(path.read_bytes()).hexdigest()

    monkeypatch.setattr(provenance, "_sha256", unread)
    assert provenance.file_digest(snapshot / "diffusion_pytorch_model.safetensors") == blob.name
    assert provenance.file_digest(snapshot / "config.json") == hashlib.sha256(b"{}").hexdigest()
