import json

import pytest

from contract import messages


@pytest.mark.parametrize("message", [
    messages.Submit("a1", "texture", "/tmp/job", {"prompt": "x", "width": 64}),
    messages.Cancel("a1"),
    messages.StatusRequest(),
    messages.Release(),
    messages.Preload("text_to_image", "sd15"),
    messages.Shutdown(),
    messages.Handshake(1, "0.1.0", "cpu", "fp32", {"torch": "2"}, 42),
    messages.Accepted("a1", 2),
    messages.Progress("a1", 3, 20, "outputs/previews/step-0003.png", ""),
    messages.Result("a1", {"image": "outputs/texture.png"}, {"seed": 7}),
    messages.Cancelled("a1"),
    messages.Error("a1", messages.INVALID_PARAMS, "width", "use 512"),
    messages.Error(None, messages.BAD_MESSAGE, "not JSON"),
    messages.Status("busy", "a1", ["b2"], ["sd15"]),
    messages.Bye(),
])
def test_round_trip_is_one_line(message):
    line = messages.encode(message)
    assert line.endswith("\n") and line.count("\n") == 1
    assert messages.decode(line) == message


def test_unknown_fields_are_ignored_for_forward_compatibility():
    line = json.dumps({"type": "cancel", "id": "x", "reason": "newer peer"})
    assert messages.decode(line) == messages.Cancel("x")


@pytest.mark.parametrize("line, reason", [
    ("{not json", "not JSON"),
    ("[1, 2]", "JSON object"),
    ('{"type": "teleport"}', "unknown message type"),
    ('{"no_type": 1}', "unknown message type"),
    ('{"type": "cancel"}', "cancel"),  # missing id
    (b"\xff\xfe", "not JSON"),
])
def test_bad_lines_raise_protocol_error_with_reason(line, reason):
    with pytest.raises(messages.ProtocolError, match=reason):
        messages.decode(line)
