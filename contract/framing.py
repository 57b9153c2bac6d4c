"""Lines and raw frames on a byte stream, with limits: what every reader of the protocol uses.

A line longer than the limit is refused without holding it in memory: the reader keeps at most
``limit`` bytes, skips the rest up to the next newline in bounded pieces, and raises
LineTooLong, so a peer can send a gigabyte without a newline and the reader stays small.
"""

from __future__ import annotations

from typing import BinaryIO

MAX_LINE = 1 << 20  # one JSON message; params and manifests stay far below this
MAX_AUTH_LINE = 4096  # the first line of a network connection, read before the peer is trusted
CHUNK_SIZE = 1 << 20  # what a sender puts in one Chunk / FileData frame
MAX_CHUNK = 8 << 20  # what a receiver accepts in one frame
_SKIP = 64 * 1024


class LineTooLong(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"line longer than {limit} bytes, skipped")
        self.limit = limit


class FrameError(ValueError):
    """The stream ended inside a frame, or a frame is over its limit."""


def read_line(stream: BinaryIO, limit: int = MAX_LINE) -> bytes | None:
    """The next line without its newline; None at the end of the stream.

    Raises LineTooLong after skipping a line over ``limit`` bytes (the stream is then at the start of
    the next line). A last line without a newline is returned as it is."""
    line = stream.readline(limit + 1)
    if not line:
        return None
    if line.endswith(b"\n"):
        return line[:-1]
    if len(line) <= limit:
        return line  # end of stream without a newline
    while True:  # over the limit: drop the rest of it in small pieces
        rest = stream.readline(_SKIP)
        if not rest or rest.endswith(b"\n"):
            raise LineTooLong(limit)


def read_exact(stream: BinaryIO, size: int) -> bytes:
    """Exactly ``size`` bytes (a frame's payload); FrameError when the stream ends first."""
    if size > MAX_CHUNK:
        raise FrameError(f"frame of {size} bytes is over the {MAX_CHUNK}-byte limit")
    data = stream.read(size)
    if data is None or len(data) != size:
        raise FrameError(f"stream ended inside a {size}-byte frame")
    return data
