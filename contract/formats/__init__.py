"""The files that cross between the add-on and the backend, each with one writer and one reader."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy


class FormatError(ValueError):
    """A job file that does not hold what its format says; the message names the file and the problem."""


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, numpy.ndarray]) -> Path:
    """An uncompressed npz (it loads at memory speed), written atomically."""
    import numpy as np

    from ..jobfolder import atomic_write_with

    return atomic_write_with(path, lambda handle: np.savez(handle, **arrays))


def read_npz(path: str | os.PathLike[str], required: tuple[str, ...], what: str,
             error: type[FormatError] = FormatError) -> dict[str, numpy.ndarray]:
    """Every array of the npz at ``path`` (no pickles), with ``required`` present; ``error`` naming the file
    as "not a readable ``what``" when it cannot be read."""
    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError) as exc:
        raise error(f"{path.name} is not a readable {what}: {exc}") from None
    missing = [name for name in required if name not in arrays]
    if missing:
        raise error(f"{path.name} lacks the array(s) {', '.join(missing)}")
    return arrays
