"""Thousands of malformed lines at a real backend; afterwards a real job still succeeds.

Each line that does not decode must be answered with exactly one line-level error (bad_message,
or too_large for a line over the limit) and must not stop the reader or the worker.
"""

from __future__ import annotations

import queue
import time

import pytest
from backend_process import BackendProcess
from fuzz_lines import malformed_lines

from contract import framing, jobfolder, messages

STDIO_LINES = 5_000
SEED = 20261201


def _decodes(line: bytes) -> bool:
    if len(line) > framing.MAX_LINE + 1:
        return False
    try:
        messages.decode(line)
    except messages.ProtocolError:
        return False
    return True


def _texture_job(tmp_path) -> messages.Submit:  # type: ignore[no-untyped-def]
    request = {"prompt": "fuzzed but fine", "width": 64, "height": 64, "steps": 2, "seed": 5}
    job_dir = jobfolder.create_job(tmp_path, "texture", request)
    return messages.Submit(jobfolder.read_job(job_dir)["id"], "texture", str(job_dir), request)


@pytest.fixture()
def backend(tiny_models):  # type: ignore[no-untyped-def]
    proc = BackendProcess(tiny_models, "--device", "cpu")
    assert isinstance(proc.next(timeout=120), messages.Handshake)
    yield proc
    proc.close()


def test_stdio_survives_malformed_lines_and_still_runs_a_job(backend, tmp_path):  # type: ignore[no-untyped-def]
    lines = malformed_lines(SEED, STDIO_LINES, oversized=3)
    undecodable = sum(not _decodes(line) for line in lines)
    assert undecodable > STDIO_LINES * 0.8, "the generator should mostly make lines that do not decode"
    assert backend.proc.stdin is not None
    raw = backend.proc.stdin.buffer  # bytes as they come: not every line is UTF-8
    for line in lines:
        raw.write(line)
    raw.flush()

    line_errors, codes = 0, set()
    deadline = time.monotonic() + 120
    while line_errors < undecodable:
        try:
            message = backend.next(timeout=max(1.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if isinstance(message, messages.Error) and message.id is None:
            line_errors += 1
            codes.add(message.code)
    assert line_errors == undecodable, f"seed {SEED}: {undecodable} bad lines, {line_errors} answered"
    assert codes <= {messages.BAD_MESSAGE, messages.TOO_LARGE} and messages.TOO_LARGE in codes
    assert backend.proc.poll() is None

    submit = _texture_job(tmp_path)
    backend.send(submit)
    final, _ = backend.until((messages.Result, messages.Error), timeout=120)
    while isinstance(final, messages.Error) and final.id != submit.id:  # late answers to fuzzed submits
        final, _ = backend.until((messages.Result, messages.Error), timeout=120)
    assert isinstance(final, messages.Result) and final.id == submit.id, final


# -- over the network ------------------------------------------------------------------------------

AUTHENTICATED_LINES = 4_000
UNAUTHENTICATED_LINES = 1_000
PLAIN_TCP_CONNECTIONS = 100
BATCH = 100


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):  # type: ignore[no-untyped-def]
    from remote_peer import RemoteServer

    proc = RemoteServer(tmp_path_factory.mktemp("fuzz"), tiny_models)
    yield proc
    proc.stop()


def _exchange(server, peer, batch: list[bytes], marker: int):  # type: ignore[no-untyped-def]
    """Send ``batch`` then a Ping; the messages answered up to its Pong, and the peer (a new one when the
    server closed the connection, as it does when a frame's bytes can no longer be trusted)."""
    from remote_peer import Peer

    answers = []
    try:
        peer.send_raw(b"".join(batch) + messages.encode(messages.Ping(marker)).encode())
        while True:
            message = peer.next(timeout=60)
            if isinstance(message, messages.Pong) and message.n == marker:
                return answers, peer
            answers.append(message)
    except (EOFError, ConnectionError, OSError):
        peer.close()
        fresh = Peer(server.port)
        assert isinstance(fresh.auth(server.token), messages.Handshake)
        return answers, fresh


def test_network_survives_malformed_lines_authenticated_and_not(server, tmp_path):  # type: ignore[no-untyped-def]
    import socket

    from remote_peer import Peer

    peer = server.peer()
    lines = malformed_lines(SEED + 1, AUTHENTICATED_LINES, oversized=2)
    answered, reconnects = 0, 0
    for start in range(0, len(lines), BATCH):
        batch = lines[start:start + BATCH]
        answers, next_peer = _exchange(server, peer, batch, start)
        reconnects += next_peer is not peer
        peer = next_peer
        answered += sum(isinstance(m, messages.Error) and m.id is None for m in answers)
    undecodable = sum(not _decodes(line) for line in lines)
    assert answered + reconnects * BATCH >= undecodable, f"seed {SEED + 1}: {undecodable} bad, {answered} answered"
    peer.close()

    # Unauthenticated: each connection's first line is malformed; one error, then the server closes it.
    refused_early = 0
    for index, line in enumerate(malformed_lines(SEED + 2, UNAUTHENTICATED_LINES)):
        stranger = Peer(server.port)
        try:
            stranger.send_raw(line)
        except OSError:  # a long line: the server refused after its first 4 KiB and closed while we still sent
            refused_early += 1
        else:
            answer = stranger.next(timeout=30)
            assert isinstance(answer, messages.Error) and answer.code == messages.UNAUTHORIZED, (index, answer)
            assert stranger.closed_by_server(), index
        stranger.close()
    for index in range(PLAIN_TCP_CONNECTIONS):  # not even TLS: garbage straight onto the port
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
            raw.sendall(malformed_lines(index, 1)[0])
    assert server.alive() and refused_early < UNAUTHENTICATED_LINES // 10

    peer = server.peer()
    request = {"prompt": "still serving", "width": 64, "height": 64, "steps": 2, "seed": 5}
    peer.send(messages.Submit("after-fuzz", "texture", "", request))
    final, _ = peer.until((messages.Result, messages.Error), timeout=120, job_id="after-fuzz")
    assert isinstance(final, messages.Result), final
    peer.close()
