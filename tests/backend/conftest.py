"""Fixtures the backend tests share: the tiny models' registry, a CPU pipeline cache, a CPU engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from backend import models
from backend.models import PipelineCache


@pytest.fixture()
def registry(tiny_models: Path) -> models.Registry:
    return models.load_registry(tiny_models)


@pytest.fixture(scope="module")
def cache() -> PipelineCache:
    return PipelineCache("cpu", torch.float32)


@pytest.fixture(scope="module")
def engine(tiny_models: Path) -> Any:
    """A CPU engine on the tiny models, warm across a module's tests (as the server keeps one); a module
    may define its own."""
    from backend.runner import make_engine

    return make_engine("cpu", "fp32", str(tiny_models))
