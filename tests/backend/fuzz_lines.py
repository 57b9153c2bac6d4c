"""A seeded generator of malformed protocol lines: garbage, truncated, ill-typed, oversized.

Seeded so a failure replays: the test prints the seed and the index of the line that did it.
Every line is something a confused or hostile peer could send; none of them may stop a backend.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, fields
from typing import Any

from contract import messages

# Over stdio a Shutdown line is a legitimate request that ends the process; the fuzzer never sends it.
_TEMPLATES: list[messages.Message] = [
    messages.Submit("fz01", "texture", "/nonexistent/job", {"prompt": "x", "width": 64}),
    messages.Submit("fz02", "pbr", "", {"source": "inputs/color.png"}, {"inputs/color.png": "0" * 64}),
    messages.Cancel("fz03"),
    messages.StatusRequest(),
    messages.Attach(["fz04", "fz05"]),
    messages.Ping(3),
    messages.UploadStart("a" * 64, 10),
    messages.Download("fz06", "outputs/texture.png", 0),
    messages.Accepted("fz07", 1),  # a backend message sent the wrong way
    messages.Progress("fz08", 1, 4),
    messages.Result("fz09", {"image": "outputs/x.png"}, {"seed": 1}),
    messages.Error(None, "internal", "x"),
]

_ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**63, -(2**70), 1.5, float("1e308"), "", "x", "../../etc/passwd", "/etc/passwd",
    "C:\\Windows", "\u0000", "\ud7ff" * 3, [], [1, "a", None], {}, {"a": {"b": [1]}}, "A" * 300,
    [[[[[[[[[[]]]]]]]]]],
]


def _ill_typed(rng: random.Random) -> str:
    template = rng.choice(_TEMPLATES)
    data = asdict(template)
    names = [f.name for f in fields(template) if f.name != "type"] or ["type"]
    for name in rng.sample(names, k=rng.randint(1, len(names))):
        data[name] = rng.choice(_ODD_VALUES)
    return json.dumps(data)


def _missing_field(rng: random.Random) -> str:
    data = asdict(rng.choice(_TEMPLATES))
    for name in rng.sample(sorted(data), k=rng.randint(1, len(data))):
        del data[name]
    return json.dumps(data)


def _truncated(rng: random.Random) -> str:
    line = messages.encode(rng.choice(_TEMPLATES)).rstrip("\n")
    return line[: rng.randint(0, len(line) - 1)]


def _not_an_object(rng: random.Random) -> str:
    return json.dumps(rng.choice([1, -2.5, "submit", None, True, [1, 2], [{"type": "submit"}]]))


def _unknown_type(rng: random.Random) -> str:
    return json.dumps({"type": rng.choice(["teleport", "SUBMIT", "", 7, None, ["submit"]]), "id": "fz10"})


def _garbage(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))).replace(b"\n", b" ")


def _deep(rng: random.Random) -> str:
    depth = rng.choice([100, 5_000, 50_000])
    return rng.choice(["[" * depth, '{"a":' * depth, "[" * depth + "]" * depth])


def _huge_number(rng: random.Random) -> str:
    return '{"type":"cancel","id":' + "9" * rng.choice([4_400, 20_000]) + "}"


def _wrong_values(rng: random.Random) -> str:
    """Right types, values a server must still refuse: bad ids, hashes, negative sizes."""
    return json.dumps(rng.choice([
        {"type": "cancel", "id": rng.choice(["../x", "a/b", "", "x" * 65, "é"])},
        {"type": "upload_start", "sha256": rng.choice(["ABC", "g" * 64, "a" * 63]), "size": 1},
        {"type": "upload_start", "sha256": "b" * 64, "size": -5},
        {"type": "chunk", "sha256": "c" * 64, "offset": -1, "size": 0},
        {"type": "download", "id": "fz11", "path": rng.choice(["../job.json", "/etc/passwd", "a\\..\\b"])},
        {"type": "submit", "id": "fz12", "task": "texture", "job_dir": "", "files": {"../x": "d" * 64}},
        {"type": "submit", "id": "fz13", "task": "no_such_task", "job_dir": "/nonexistent", "params": {}},
    ]))


_KINDS = [(_ill_typed, 30), (_missing_field, 12), (_truncated, 15), (_not_an_object, 5), (_unknown_type, 5),
          (_garbage, 15), (_deep, 2), (_huge_number, 2), (_wrong_values, 14)]


def malformed_lines(seed: int, count: int, oversized: int = 0, oversize_bytes: int = (1 << 20) + 4096) -> list[bytes]:
    """``count`` malformed lines (each ending in a newline), ``oversized`` of them over the line limit."""
    rng = random.Random(seed)
    makers = [maker for maker, weight in _KINDS for _ in range(weight)]
    lines: list[bytes] = []
    for _ in range(count - oversized):
        made = rng.choice(makers)(rng)
        raw = made if isinstance(made, bytes) else made.encode("utf-8", "surrogatepass")
        lines.append(raw + b"\n")
    padded = b'{"type":"status_request","pad":"' + b"x" * oversize_bytes + b'"}\n'
    for _ in range(oversized):
        lines.insert(rng.randrange(len(lines) + 1), padded)
    return lines
