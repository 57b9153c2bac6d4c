import json

import pytest

from backend import protocol


@pytest.mark.parametrize("message", [
    protocol.Submit("a1", "texture", "/tmp/job", {"prompt": "x", "width": 64}),
    protocol.Cancel("a1"),
    protocol.StatusRequest(),
    protocol.Release(),
    protocol.Shutdown(),
    protocol.Handshake(1, "0.1.0", "cpu", "fp32", {"torch": "2"}, 42),
    protocol.Accepted("a1", 2),
    protocol.Progress("a1", 3, 20, "outputs/previews/step-0003.png", ""),
    protocol.Result("a1", {"image": "outputs/texture.png"}, {"seed": 7}),
    protocol.Cancelled("a1"),
    protocol.Error("a1", protocol.INVALID_PARAMS, "width", "use 512"),
    protocol.Error(None, protocol.BAD_MESSAGE, "not JSON"),
    protocol.Status("busy", "a1", ["b2"], ["sd15"]),
    protocol.Bye(),
])
def test_round_trip_is_one_line(message):
    line = protocol.encode(message)
    assert line.endswith("\n") and line.count("\n") == 1
    assert protocol.decode(line) == message


def test_unknown_fields_are_ignored_for_forward_compatibility():
    line = json.dumps({"type": "cancel", "id": "x", "reason": "newer peer"})
    assert protocol.decode(line) == protocol.Cancel("x")


@pytest.mark.parametrize("line, reason", [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "teleport"}', "unknown message type"),
    ('{"no_type": 1}', "unknown message type"),
    ('{"type": "cancel"}', "cancel"),  # missing id
    (b"\xff\xfe", "not JSON"),
])
def test_bad_lines_raise_protocol_error_with_reason(line, reason):
    with pytest.raises(protocol.ProtocolError, match=reason):
        protocol.decode(line)
