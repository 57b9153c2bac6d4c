"""The engine's options as every way of serving takes them: the add-on's stdio server, the network listener
and the farm's workers. Kept free of torch so command lines and Ray's driver import it cheaply."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.runner import Engine


@dataclass(frozen=True)
class EngineOptions:
    """``--device`` … ``--vram-budget``; the registry must be readable wherever the engine runs (on a farm: a path
    all nodes see, or the built-in Hugging Face ids with the models in each node's cache)."""

    device: str = "auto"
    precision: str = "auto"
    registry: str | None = None
    allow_download: bool = False
    allow_unsafe: bool = False
    vram_budget: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EngineOptions:
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def make(self, user_models: str | None = None) -> Engine:
        """The engine: device and memory mode picked, registry read; loads no weights."""
        from backend.projection.warm import warm_in_background
        from backend.runner import make_engine

        engine = make_engine(self.device, self.precision, self.registry, self.allow_download, self.allow_unsafe,
                             self.vram_budget, user_models)
        warm_in_background()  # a server: its first bake should not wait for numba
        return engine
