"""The add-on's remote client and supervisor (no bpy) against a real `python -m backend serve --listen` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from extension_package import import_addon_module
from flaky_proxy import FlakyProxy
from PIL import Image

from contract import jobfolder
from devtools.remote_server import RemoteServer

supervisor_mod = import_addon_module("addon.jobs.supervisor")
connection_test_mod = import_addon_module("addon.jobs.connection_test")
remote_mod = import_addon_module("addon.jobs.remote")
known_mod = import_addon_module("addon.jobs.known_servers")
tasks_mod = import_addon_module("contract.tasks")



def start_server(folder: Path, tiny_models: Path) -> RemoteServer:
    """A real server process; its token and certificate in ``folder``."""
    return RemoteServer(folder, tiny_models)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    s = start_server(tmp_path_factory.mktemp("server"), tiny_models)
    yield s
    s.stop()


def _config(server_address: str, token: str, known: Path):
    return remote_mod.RemoteConfig(address=server_address, token=token, known_servers=known)


@pytest.fixture
def known(tmp_path) -> Path:
    return tmp_path / "known_servers.json"


@pytest.fixture
def sup(server, known):
    s = supervisor_mod.Supervisor(lambda: _config(server.address, server.token, known))
    yield s
    s.stop()


def _texture_job(tmp_path, **params):
    request = {"prompt": "slate roof", "width": 64, "height": 64, "steps": 4, "seed": 5, **params}
    job_dir = jobfolder.create_job(tmp_path / "jobs", "texture", request)
    return supervisor_mod.Job(jobfolder.read_job(job_dir)["id"], job_dir, tasks_mod.TextureParams(**request))


def _pbr_job(tmp_path, image: np.ndarray):
    job_dir = jobfolder.create_job(tmp_path / "jobs", "pbr", {})
    Image.fromarray(image).save(job_dir / "inputs" / "color.png")
    params = tasks_mod.PbrParams(source="inputs/color.png")
    jobfolder.update_job(job_dir, request=params.to_dict())
    return supervisor_mod.Job(jobfolder.read_job(job_dir)["id"], job_dir, params)


def test_texture_job_runs_remotely_into_the_local_folder(sup, server, known, tmp_path):
    landed = []
    states = []
    job = _texture_job(tmp_path)
    job.on_result = lambda j, outputs: landed.append(outputs.image)
    handle = sup._handle

    def recording(message):  # every state the job passes through, however many messages one tick takes
        handle(message)
        states.append(job.state)

    sup._handle = recording
    sup.submit(job)
    deadline = time.monotonic() + 120
    while not job.finished and time.monotonic() < deadline:
        sup.tick()
        time.sleep(0.02)
    assert job.state == supervisor_mod.DONE, job.error
    assert landed == ["outputs/texture.png"] and (job.job_dir / landed[0]).is_file()
    assert (job.job_dir / "backend.log").is_file()
    record = jobfolder.read_job(job.job_dir)
    assert record["status"] == "done" and record["id"] == job.id and record["task"] == "texture"
    assert record["remote"] == {"server": server.address}
    assert record["request"]["prompt"] == "slate roof"
    assert record["outputs"]
    assert supervisor_mod.RUNNING in states and supervisor_mod.DOWNLOADING in states
    assert job.preview is not None and job.preview.is_file(), sup.client.log_tail()  # downloaded first
    assert job.preview.is_relative_to(job.job_dir)
    # First use pinned the server's certificate.
    assert json.loads(known.read_text()) == {server.address: sup.client.fingerprint}
    assert len(sup.client.fingerprint) == 64
    assert sup.handshake is not None and sup.handshake.device == "cpu"


def test_upload_job_and_an_identical_one_sends_nothing_again(sup, tmp_path):
    image = np.random.default_rng().integers(0, 255, (32, 32, 3), dtype=np.uint8)
    first = _pbr_job(tmp_path, image)
    progress = []
    sup.submit(first)
    while not first.finished:
        sup.tick()
        if first.state == supervisor_mod.UPLOADING:
            progress.append(first.progress_text())
        time.sleep(0.01)
    assert first.state == supervisor_mod.DONE, first.error
    assert first.outputs.maps and all((first.job_dir / p).is_file() for p in first.outputs.maps.values())
    sent = sup.client.transfers.uploaded_bytes
    assert sent == (first.job_dir / "inputs" / "color.png").stat().st_size
    assert all(text.startswith("Uploading ") and text.endswith(" MB") for text in progress)

    second = _pbr_job(tmp_path, image)
    sup.submit(second)
    sup.run_until_done(second, timeout=120)
    assert second.state == supervisor_mod.DONE, second.error
    assert sup.client.transfers.uploaded_bytes == sent  # the server had the content: no byte went up


def test_wrong_token_fails_the_job_with_a_clear_message(server, known, tmp_path):
    sup = supervisor_mod.Supervisor(lambda: _config(server.address, "not-the-token", known))
    job = sup.submit(_texture_job(tmp_path))
    sup.run_until_done(job, timeout=30)
    assert job.state == supervisor_mod.FAILED
    assert job.error.code == "unauthorized"
    assert server.address in job.error.message and "refused" in job.error.message
    assert "token" in job.error.hint
    assert not known.exists()  # a server that did not let us in is not pinned
    assert jobfolder.read_job(job.job_dir)["status"] == "failed"


class _TlsListener:
    """A TLS endpoint with the server's own certificate that records every byte a client sends it."""

    def __init__(self, folder: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(folder / "server.crt", folder / "server.key")
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.handshakes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        raw, _ = self.sock.accept()
        raw.settimeout(5)
        with self.context.wrap_socket(raw, server_side=True) as conn:
            self.handshakes += 1
            try:
                while data := conn.recv(4096):
                    self.received += data
            except OSError:
                pass


def test_a_changed_certificate_is_refused_before_the_token_is_sent(server, known, tmp_path):
    listener = _TlsListener(server.folder)
    address = f"127.0.0.1:{listener.port}"
    known_mod.pin(known, address, "0" * 64)  # pinned on an earlier first use: another certificate
    sup = supervisor_mod.Supervisor(lambda: _config(address, server.token, known))
    job = sup.submit(_texture_job(tmp_path))
    sup.run_until_done(job, timeout=30)
    assert job.state == supervisor_mod.FAILED
    assert f"the server at {address} presented certificate SHA256:" in job.error.message
    assert "not the one pinned on first use (SHA256:00:00:" in job.error.message
    assert "Forget Server Key" in job.error.message
    time.sleep(0.2)
    assert listener.handshakes == 1 and listener.received == b""  # no Auth, no token
    assert json.loads(known.read_text()) == {address: "0" * 64}  # the pin stays until forgotten

    # The real server's address, pinned to another key, is refused the same way.
    known_mod.pin(known, server.address, "1" * 64)
    sup = supervisor_mod.Supervisor(lambda: _config(server.address, server.token, known))
    job = sup.submit(_texture_job(tmp_path))
    sup.run_until_done(job, timeout=30)
    assert job.state == supervisor_mod.FAILED and "presented certificate" in job.error.message
    assert known_mod.forget(known, server.address)
    job = sup.submit(_texture_job(tmp_path))
    sup.run_until_done(job, timeout=120)
    assert job.state == supervisor_mod.DONE, job.error  # forgotten: pinned again on this first use
    assert known_mod.pinned(known, server.address) == sup.client.fingerprint


def _tick_while(sup, keep_going, seconds: float) -> None:
    """Tick the supervisor as Blender's timer would while ``keep_going()``, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while keep_going() and time.monotonic() < deadline:
        sup.tick()
        time.sleep(0.1)


def _wait_running(sup, job, limit=120.0):
    deadline = time.monotonic() + limit
    while job.step == 0 and time.monotonic() < deadline:
        sup.tick()
        time.sleep(0.05)
    assert job.state == supervisor_mod.RUNNING, (job.state, job.error)


def test_a_killed_server_fails_the_job_within_two_seconds(tmp_path, tiny_models, known):
    own = start_server(tmp_path / "server", tiny_models)
    try:
        sup = supervisor_mod.Supervisor(lambda: _config(own.address, own.token, known))
        job = sup.submit(_texture_job(tmp_path, steps=200, width=128, height=128))
        _wait_running(sup, job)
        own.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while not job.finished and time.monotonic() - killed < 5:
            sup.tick()
            time.sleep(0.1)  # the add-on's timer interval
        assert time.monotonic() - killed < 2.0
        assert job.state == supervisor_mod.FAILED
        assert job.error.message.startswith(f"lost the connection to the remote backend at {own.address}")
        assert "still be running" in job.error.hint
        assert jobfolder.read_job(job.job_dir)["status"] == "failed"
        assert sup.detached_jobs() == [job]
    finally:
        own.stop()


def test_a_dropped_connection_reattaches_and_collects_the_result(server, known, tmp_path):
    proxy = FlakyProxy(server.port)
    address = f"127.0.0.1:{proxy.port}"
    sup = supervisor_mod.Supervisor(lambda: _config(address, server.token, known))
    landed = []
    try:
        job = _texture_job(tmp_path, steps=120, width=128, height=128)
        job.on_result = lambda j, outputs: landed.append(outputs.image)
        sup.submit(job)
        _wait_running(sup, job)
        proxy.drop_all()
        _tick_while(sup, lambda: not job.finished, 5)
        assert job.state == supervisor_mod.FAILED and "lost the connection" in job.error.message
        assert sup.detached_jobs() == [job]
        # No submit: tick() reconnects after a few seconds and attaches; the job comes back and ends.
        _tick_while(sup, lambda: job.state != supervisor_mod.DONE, 120)
        assert job.state == supervisor_mod.DONE, job.error
        assert landed == ["outputs/texture.png"] and (job.job_dir / landed[0]).is_file()
        record = jobfolder.read_job(job.job_dir)
        assert record["status"] == "done" and "error" not in record
        assert record["remote"] == {"server": address}
        assert sup.detached_jobs() == [] and sup.starts == 2
    finally:
        sup.stop()
        proxy.close()


def test_a_job_that_finished_while_the_connection_was_down_is_collected_as_done(server, known, tmp_path):
    """The reattach's first answer is then the job's Files and Result: the merged server record (done) must
    not be marked running again."""
    proxy = FlakyProxy(server.port)
    sup = supervisor_mod.Supervisor(lambda: _config(f"127.0.0.1:{proxy.port}", server.token, known))
    try:
        job = _texture_job(tmp_path, steps=40, preview_every=0)
        sup.submit(job)
        _wait_running(sup, job)
        proxy.drop_all()
        _tick_while(sup, lambda: not job.finished, 5)
        assert job.state == supervisor_mod.FAILED and sup.detached_jobs() == [job]
        deadline = time.monotonic() + 120  # no ticks (no reconnect) until the server has finished it
        while not any(jobfolder.read_job(p.parent).get("status") == "done"
                      for p in server.root.glob(f"jobs/*/*{job.id}/job.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        _tick_while(sup, lambda: job.state != supervisor_mod.DONE, 120)
        assert job.state == supervisor_mod.DONE, job.error
        record = jobfolder.read_job(job.job_dir)
        assert record["status"] == "done" and "error" not in record and record["ended"] > record["started"]
        assert (job.job_dir / "outputs" / "texture.png").is_file()
    finally:
        sup.stop()
        proxy.close()


def test_a_job_still_running_after_a_drop_is_followed_again_after_the_reattach(server, known, tmp_path):
    proxy = FlakyProxy(server.port)
    address = f"127.0.0.1:{proxy.port}"
    sup = supervisor_mod.Supervisor(lambda: _config(address, server.token, known))
    try:
        job = _texture_job(tmp_path, steps=200, width=320, height=320, preview_every=0)  # outlasts the reconnect
        sup.submit(job)
        _wait_running(sup, job)
        proxy.drop_all()
        deadline = time.monotonic() + 5
        while job.state != supervisor_mod.FAILED:  # the loss is noticed first
            assert time.monotonic() < deadline, (job.state, job.step)
            sup.tick()
            time.sleep(0.05)
        step_at_loss, deadline = job.step, time.monotonic() + 60
        while job.state != supervisor_mod.RUNNING or job.step <= step_at_loss:  # reattached, and running on
            assert time.monotonic() < deadline, (job.state, job.step, job.error)
            sup.tick()
            time.sleep(0.05)
        assert sup.starts == 2 and job.error is None and not sup.detached_jobs()
        sup.cancel(job.id)  # and the reattached job is this client's to cancel
        sup.run_until_done(job, timeout=60)
        assert job.state == supervisor_mod.CANCELLED
    finally:
        sup.stop()
        proxy.close()


def test_unknown_server_fails_fast_with_the_address(known, tmp_path):
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    sup = supervisor_mod.Supervisor(lambda: _config(f"127.0.0.1:{port}", "x", known))
    job = sup.submit(_texture_job(tmp_path))
    started = time.monotonic()
    sup.run_until_done(job, timeout=30)
    assert time.monotonic() - started < 5
    assert job.state == supervisor_mod.FAILED and f"127.0.0.1:{port}" in job.error.message


def test_connection_test_reports_latency_device_and_queue(sup, server):
    test = connection_test_mod.ConnectionTest(sup, timeout=30)
    sup.ensure_started()
    while (report := test.poll()) is None:
        time.sleep(0.05)
    assert report.ok, report.lines
    text = report.text()
    assert f"Connected to {server.address}" in text and " ms round trip" in text
    assert "Device cpu" in text and "torch " in text and "diffusers " in text
    assert "job(s) waiting" in text and "client(s) connected" in text
    assert sup.client.latency_ms is not None and sup.client.latency_ms < 1000


def test_an_upload_cut_midway_resumes_on_a_new_connection(server, known, tmp_path):
    # Connection 0 is the control connection, 1 the first transfer connection: cut that one after 3 MB.
    proxy = FlakyProxy(server.port, cut_after={1: 3_000_000})
    address = f"127.0.0.1:{proxy.port}"
    sup = supervisor_mod.Supervisor(lambda: _config(address, server.token, known))
    try:
        job = _pbr_job(tmp_path, np.random.default_rng().integers(0, 255, (16, 16, 3), dtype=np.uint8))
        extra = job.job_dir / "inputs" / "extra.bin"
        extra.write_bytes(os.urandom(8_000_000))
        sup.submit(job)
        sup.run_until_done(job, timeout=120)
        assert job.state == supervisor_mod.DONE, (job.error, sup.client and sup.client.log_tail())
        total = extra.stat().st_size + (job.job_dir / "inputs" / "color.png").stat().st_size
        transfers = sup.client.transfers
        assert proxy.connections >= 3  # it reconnected
        # Resumed from what the server kept of the 3 MB that got through (whole chunks), not from zero; what
        # was sent twice is only what sat in socket buffers when the connection was cut.
        assert len(transfers.resumed_from) == 1 and 1_000_000 <= transfers.resumed_from[0] <= 3_000_000
        assert total <= transfers.uploaded_bytes < 2 * total
    finally:
        sup.stop()
        proxy.close()


def test_a_download_cut_midway_resumes_from_the_partial_file(server, known, tmp_path):
    # Connection 1 carries the upload, then the outputs: cut it 3 MB into them, inside the 15 MB maps.exr.
    proxy = FlakyProxy(server.port, cut_down_after={1: 3_000_000})
    sup = supervisor_mod.Supervisor(lambda: _config(f"127.0.0.1:{proxy.port}", server.token, known))
    try:
        job = _pbr_job(tmp_path, np.random.default_rng(7).integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
        sup.submit(job)
        sup.run_until_done(job, timeout=120)
        assert job.state == supervisor_mod.DONE, (job.error, sup.client and sup.client.log_tail())
        transfers = sup.client.transfers
        why = (proxy.connections, sup.client.log_tail())
        assert proxy.connections >= 3 and len(transfers.downloads_resumed_from) == 1, why
        assert 1_000_000 <= transfers.downloads_resumed_from[0] <= 3_000_000, why
        record = jobfolder.read_job(job.job_dir)
        for name in record["outputs"]["maps"].values():  # every map arrived whole: the SHA-256 was checked
            assert (job.job_dir / name).is_file()
    finally:
        sup.stop()
        proxy.close()
