"""The files that cross between the add-on and the backend, each with one writer and one reader."""

from __future__ import annotations


class FormatError(ValueError):
    """A job file that does not hold what its format says; the message names the file and the problem."""
