"""The network backend (`python -m backend serve --listen`) as a real process, spoken to by raw peers."""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import stat
import time

import pytest
from backend_process import run_backend
from remote_peer import Peer, RemoteServer

from contract import framing, jobfolder, messages

TEXTURE = {"prompt": "weathered oak planks", "width": 64, "height": 64, "steps": 2, "seed": 3}
MAX_UPLOAD_MB = 2


@pytest.fixture(scope="module")
def server(tiny_models, tmp_path_factory):
    proc = RemoteServer(tmp_path_factory.mktemp("remote"), tiny_models, "--max-upload-mb", str(MAX_UPLOAD_MB))
    yield proc
    assert proc.stop() == 0


def _id() -> str:
    return "j" + secrets.token_hex(4)


def _submit(peer: Peer, params: dict | None = None, task: str = "texture", files: dict | None = None,
            job_id: str | None = None) -> str:
    job_id = job_id or _id()
    peer.send(messages.Submit(job_id, task, "", {**TEXTURE, **(params or {})} if task == "texture" else params or {},
                              files or {}))
    return job_id


def _finish(peer: Peer, job_id: str, timeout: float = 120) -> tuple[messages.Message, list[messages.Message]]:
    return peer.until((messages.Result, messages.Error, messages.Cancelled), timeout, job_id=job_id)


def _job_dir(server: RemoteServer, job_id: str):  # type: ignore[no-untyped-def]
    (found,) = [p for p in server.jobs() if p.name.endswith("-" + job_id)]
    return found


def _png(size: int = 16) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (120, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


# -- jobs end to end ---------------------------------------------------------------------------


def test_texture_job_end_to_end_with_files_before_the_result(server):
    peer = server.peer()
    assert peer.fingerprint == server.fingerprint
    job_id = _submit(peer)
    final, seen = _finish(peer, job_id)
    assert isinstance(final, messages.Result), final
    kinds = [type(m) for m in seen]
    assert kinds[0] is messages.Accepted and messages.Progress in kinds
    files = seen[-2]
    assert isinstance(files, messages.Files) and files.id == job_id
    assert {"job.json", "backend.log", final.outputs["image"]} <= set(files.files)
    image = peer.download(job_id, final.outputs["image"])
    assert isinstance(image, bytes) and hashlib.sha256(image).hexdigest() == files.files[final.outputs["image"]].sha256
    record = peer.download(job_id, "job.json")
    assert isinstance(record, bytes) and b'"done"' in record
    assert peer.download(job_id, "job.json", offset=len(record)) == b""  # resuming at the end: nothing left
    peer.close()


def test_uploaded_input_is_placed_and_second_upload_is_not_sent_again(server):
    peer = server.peer()
    data = _png()
    sha, offset = peer.upload(data)
    assert offset == 0
    job_id = _submit(peer, {"source": "inputs/color.png"}, task="pbr", files={"inputs/color.png": sha})
    final, _ = _finish(peer, job_id)
    assert isinstance(final, messages.Result), final
    assert (_job_dir(server, job_id) / "inputs" / "color.png").read_bytes() == data
    other = server.peer()
    assert other.upload(data) == (sha, len(data))  # already stored: nothing to send
    peer.close()
    other.close()


def test_ping_status_and_refused_requests_keep_the_connection(server):
    peer = server.peer()
    peer.send(messages.Ping(7))
    assert peer.next() == messages.Pong(7)
    peer.send(messages.StatusRequest())
    status = peer.next()
    assert isinstance(status, messages.Status) and status.clients >= 1 and status.job is None
    peer.send(messages.Shutdown())
    assert peer.next().code == messages.BAD_MESSAGE
    peer.send_raw(b"not json\n")
    assert peer.next().code == messages.BAD_MESSAGE
    peer.send_raw(b'{"type": "submit", "id": "x", "task": ["texture"], "job_dir": ""}\n')
    assert peer.next().code == messages.BAD_MESSAGE
    peer.send_raw(b"x" * (framing.MAX_LINE + 10) + b"\n")
    assert peer.next().code == messages.TOO_LARGE
    peer.send(messages.Ping(8))
    assert peer.next() == messages.Pong(8)
    peer.close()


# -- who may connect ------------------------------------------------------------------------------


@pytest.mark.parametrize("first", [
    messages.encode(messages.StatusRequest()).encode(),  # no Auth
    messages.encode(messages.Auth("wrong-token-" + "x" * 30, "c" * 32)).encode(),
    b"x" * (framing.MAX_AUTH_LINE + 100) + b"\n",
    b"\x00\xff garbage\n",
], ids=["no-auth", "wrong-token", "too-long", "garbage"])
def test_a_bad_first_line_is_refused_and_the_server_keeps_serving(server, first):
    peer = Peer(server.port)
    peer.send_raw(first)
    error = peer.next()
    assert isinstance(error, messages.Error) and error.code == messages.UNAUTHORIZED and error.id is None
    assert peer.closed_by_server()
    good = server.peer()
    good.send(messages.Ping(1))
    assert good.next() == messages.Pong(1)
    good.close()


def test_token_file_is_private(server):
    assert stat.S_IMODE(server.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((server.token_file.parent / "server.key").stat().st_mode) == 0o600
    assert len(server.token) >= 40


def test_insecure_is_refused_off_loopback(tmp_path):
    proc = run_backend("serve", "--listen", "0.0.0.0:0", "--insecure", "--root", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "loopback" in proc.stderr, proc.stderr


def test_token_file_readable_by_others_is_refused(tmp_path):
    token = tmp_path / "token"
    token.write_text("a" * 43)
    token.chmod(0o644)
    proc = run_backend("serve", "--listen", ":0", "--token-file", str(token), "--root", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "chmod 600" in proc.stderr, proc.stderr


def test_old_token_refused_after_restart_and_new_cert_has_new_fingerprint(tiny_models, tmp_path):
    first = RemoteServer(tmp_path, tiny_models)
    old_token, old_fingerprint = first.token, first.fingerprint
    assert first.peer().fingerprint == old_fingerprint
    assert first.stop() == 0

    first.token_file.unlink()  # a new token file: the old token must stop working
    second = RemoteServer(tmp_path, tiny_models)
    try:
        assert second.token != old_token and second.fingerprint == old_fingerprint
        replay = Peer(second.port)
        assert replay.auth(old_token).code == messages.UNAUTHORIZED
        second.peer().close()
    finally:
        assert second.stop() == 0

    for name in ("server.crt", "server.key"):
        (tmp_path / name).unlink()
    third = RemoteServer(tmp_path, tiny_models)
    try:
        peer = third.peer()
        assert peer.fingerprint == third.fingerprint != old_fingerprint
    finally:
        assert third.stop() == 0


# -- what a client may name -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "inputs/../../x", "C:\\x", "inputs\\..\\x", "inputs/a\x00b",
                                  "job.json", "outputs/fake.png"])
def test_bad_input_names_are_refused(server, name):
    peer = server.peer()
    sha, _ = peer.upload(b"some input bytes")
    job_id = _submit(peer, files={name: sha})
    error = peer.next()
    assert isinstance(error, messages.Error) and error.code == messages.BAD_FILE and error.id == job_id, error
    peer.close()


def test_submit_naming_a_server_folder_or_unknown_content_is_refused(server):
    peer = server.peer()
    peer.send(messages.Submit(_id(), "texture", "/tmp/somewhere", TEXTURE))
    assert peer.next().code == messages.BAD_MESSAGE
    _submit(peer, files={"inputs/a.png": "0" * 64})
    assert peer.next().code == messages.BAD_FILE
    _submit(peer, {"width": 100})
    assert peer.next().code == messages.INVALID_PARAMS
    _submit(peer, task="paint")
    assert peer.next().code == messages.UNKNOWN_TASK
    peer.close()


def test_links_in_a_job_folder_are_not_downloaded(server, tmp_path):
    peer = server.peer()
    job_id = _submit(peer)
    assert isinstance(_finish(peer, job_id)[0], messages.Result)
    outputs = _job_dir(server, job_id) / "outputs"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for clients")
    os.symlink(secret, outputs / "link.png")
    os.symlink(tmp_path, outputs / "linked_dir")
    for path in ("outputs/link.png", "outputs/linked_dir/secret.txt", "outputs", "../../token", "outputs/none.png"):
        error = peer.download(job_id, path)
        assert isinstance(error, messages.Error) and error.code == messages.BAD_FILE, (path, error)
    peer.close()


# -- uploads --------------------------------------------------------------------------------------


def test_upload_over_the_limit_is_refused(server):
    peer = server.peer()
    peer.send(messages.UploadStart("a" * 64, MAX_UPLOAD_MB * 1024 * 1024 + 1))
    error = peer.next()
    assert error.code == messages.TOO_LARGE
    peer.send(messages.Ping(2))
    assert peer.next() == messages.Pong(2)
    peer.close()


def test_chunk_at_the_wrong_offset_closes_the_connection(server):
    peer = server.peer()
    data = secrets.token_bytes(1000)
    sha = hashlib.sha256(data).hexdigest()
    peer.send(messages.UploadStart(sha, len(data)))
    assert peer.next() == messages.UploadOffset(sha, 0)
    peer.send_chunk(sha, 10, data[10:20])
    error = peer.next()
    assert error.code == messages.BAD_FILE and "expected offset 0" in error.message
    assert peer.closed_by_server()


def test_content_not_matching_its_hash_is_refused(server):
    peer = server.peer()
    data = secrets.token_bytes(1000)
    sha = hashlib.sha256(data).hexdigest()
    peer.send(messages.UploadStart(sha, len(data)))
    assert peer.next() == messages.UploadOffset(sha, 0)
    peer.send_chunk(sha, 0, secrets.token_bytes(1000))
    error = peer.next()
    assert error.code == messages.BAD_FILE and "SHA-256" in error.message
    peer.send(messages.UploadStart(sha, len(data)))
    assert peer.next() == messages.UploadOffset(sha, 0)  # the bad bytes are gone
    peer.close()


def test_upload_resumes_after_a_dropped_connection(server):
    data = secrets.token_bytes(300_000)
    sha, half = hashlib.sha256(data).hexdigest(), 150_000
    peer = server.peer()
    peer.send(messages.UploadStart(sha, len(data)))
    assert peer.next() == messages.UploadOffset(sha, 0)
    peer.send_chunk(sha, 0, data[:half])
    peer.send(messages.Ping(1))
    assert peer.next() == messages.Pong(1)  # the chunk was taken before the ping was read
    peer.reset()
    again = server.peer()
    again.send(messages.UploadStart(sha, len(data)))
    assert again.next() == messages.UploadOffset(sha, half)
    again.send_chunk(sha, half, data[half:])
    assert again.next() == messages.Stored(sha)
    again.close()


# -- owners ---------------------------------------------------------------------------------------


def test_another_clients_cancel_is_refused_and_the_job_finishes(server):
    owner, other = server.peer(), server.peer()
    job_id = _submit(owner, {"steps": 4})
    assert isinstance(owner.next(), messages.Accepted)
    other.send(messages.Cancel(job_id))
    error = other.next()
    assert error.code == messages.NOT_YOURS and error.id == job_id
    other.send(messages.Cancel("nosuchjob"))
    assert other.next().code == messages.UNKNOWN_JOB
    other.send(messages.Attach([job_id]))
    assert other.next().code == messages.NOT_YOURS
    assert isinstance(other.download(job_id, "job.json"), messages.Error)
    assert isinstance(_finish(owner, job_id)[0], messages.Result)
    owner.close()
    other.close()


def test_round_robin_between_clients(server):
    a, b = server.peer(), server.peer()
    a_ids = [_submit(a, {"steps": 3}) for _ in range(3)]
    for _ in a_ids:
        assert isinstance(a.until((messages.Accepted,))[0], messages.Accepted)
    b_id = _submit(b, {"steps": 3})
    accepted, _ = b.until((messages.Accepted,))
    b.send(messages.StatusRequest())
    status, _ = b.until((messages.Status,))
    assert status.queued == [b_id] and status.positions[b_id] == 0  # next, ahead of a's two others
    for job_id in a_ids:
        assert isinstance(_finish(a, job_id)[0], messages.Result)
    assert isinstance(_finish(b, b_id)[0], messages.Result)
    started = {job_id: jobfolder.read_job(_job_dir(server, job_id))["started"] for job_id in [*a_ids, b_id]}
    assert sorted(started, key=started.get) == [a_ids[0], b_id, a_ids[1], a_ids[2]]
    a.close()
    b.close()


def test_attach_after_reconnect_collects_a_finished_job(server):
    peer = server.peer()
    key = peer.client
    job_id = _submit(peer)
    assert isinstance(peer.next(), messages.Accepted)
    peer.reset()
    deadline = time.monotonic() + 120
    while jobfolder.read_job(_job_dir(server, job_id))["status"] != "done":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    again = Peer(server.port)
    assert isinstance(again.auth(server.token, key), messages.Handshake)
    again.send(messages.Attach([job_id, "neverheard"]))
    files = again.next()
    assert isinstance(files, messages.Files) and "job.json" in files.files
    result = again.next()
    assert isinstance(result, messages.Result) and result.id == job_id
    assert again.next().code == messages.UNKNOWN_JOB
    image = again.download(job_id, result.outputs["image"])
    assert isinstance(image, bytes) and len(image) == files.files[result.outputs["image"]].size
    again.send(messages.Submit(job_id, "texture", "", TEXTURE))  # the id is still known
    assert again.next().code == messages.BAD_MESSAGE
    again.close()


def test_a_killed_client_does_not_stop_its_job_or_others(server):
    gone = server.peer()
    job_id = _submit(gone, {"steps": 8})
    gone.until((messages.Progress,))
    gone.reset()
    other = server.peer()
    other_id = _submit(other)
    assert isinstance(_finish(other, other_id)[0], messages.Result)
    assert jobfolder.read_job(_job_dir(server, job_id))["status"] == "done"
    other.close()


def test_queued_jobs_of_a_client_gone_past_the_grace_are_cancelled(tiny_models, tmp_path):
    server = RemoteServer(tmp_path, tiny_models, "--orphan-grace", "1")
    try:
        gone = server.peer()
        key = gone.client
        first, queued = _submit(gone, {"steps": 200, "width": 256, "height": 256}), _submit(gone)
        gone.until((messages.Accepted,), job_id=queued)
        gone.until((messages.Progress,), job_id=first)
        gone.reset()
        deadline = time.monotonic() + 60
        while jobfolder.read_job(_job_dir(server, queued))["status"] != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert jobfolder.read_job(_job_dir(server, first))["status"] == "running"  # a running job is left alone
        back = Peer(server.port)
        assert isinstance(back.auth(server.token, key), messages.Handshake)
        back.send(messages.Attach([queued]))
        assert isinstance(back.next(), messages.Cancelled)
        back.send(messages.Cancel(first))
        assert isinstance(_finish(back, first)[0], messages.Cancelled)
    finally:
        assert server.stop() == 0
