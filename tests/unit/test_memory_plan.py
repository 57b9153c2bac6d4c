"""VRAM budget plans: every budget on every device and card size (pure: nothing loads)."""

from __future__ import annotations

import pytest

from backend.diffusion.memory import VRAM_BUDGETS, MemoryPlan, oom_hint, plan_memory, total_vram
from backend.errors import TaskError
from contract import messages

GIB = 1024**3
SIZES = (None, 4 * GIB, 6 * GIB, 7 * GIB, 8 * GIB, 10 * GIB, 12 * GIB, 16 * GIB, 24 * GIB, 80 * GIB)
# budget -> (cpu_offload, sequential_offload, vae_tiling, attention_slicing) on a GPU
GPU_FLAGS = {"high": (False, False, False, False), "12gb": (False, False, True, False),
             "8gb": (True, False, True, False), "6gb": (False, True, True, True)}


def flags(plan: MemoryPlan) -> tuple[bool, bool, bool, bool]:
    return plan.cpu_offload, plan.sequential_offload, plan.vae_tiling, plan.attention_slicing


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "cpu"])
@pytest.mark.parametrize("budget", VRAM_BUDGETS)
def test_every_budget_device_and_size(budget: str, device: str, size: int | None) -> None:
    plan = plan_memory(budget, device, size)
    assert plan.budget in GPU_FLAGS  # auto is always resolved to a mode
    assert plan.mode_label and plan.reason
    gpu = device.startswith("cuda")
    if budget != "auto":
        assert plan.budget == budget  # an explicit budget does not depend on the card
        assert "VRAM Budget set to" in plan.reason
    else:
        assert plan.mode_label.startswith("Auto: ")
    offload, sequential, tiling, slicing = GPU_FLAGS[plan.budget]
    if gpu:
        assert flags(plan) == (offload, sequential, tiling, slicing)
        assert "no offload" not in plan.mode_label
    else:  # no offload on CPU / MPS, said in the label; tiling and slicing still lower peak memory
        assert not plan.cpu_offload and not plan.sequential_offload and not plan.offloads
        assert (plan.vae_tiling, plan.attention_slicing) == (tiling, slicing)
        assert "no offload" in plan.mode_label and device.upper() in plan.mode_label
    assert not (plan.cpu_offload and plan.sequential_offload)


@pytest.mark.parametrize("size, mode", [
    (80 * GIB, "high"), (24 * GIB, "high"), (16 * GIB, "high"), (16 * GIB - 1, "12gb"), (12 * GIB, "12gb"),
    (10 * GIB, "12gb"), (10 * GIB - 1, "8gb"), (8 * GIB, "8gb"), (7 * GIB, "8gb"), (7 * GIB - 1, "6gb"),
    (6 * GIB, "6gb"), (2 * GIB, "6gb"), (None, "high")])
def test_auto_by_card_size(size: int | None, mode: str) -> None:
    plan = plan_memory("auto", "cuda", size)
    assert plan.budget == mode
    if size is not None:
        assert f"{size / GIB:.1f} GB" in plan.reason
    else:
        assert "unknown" in plan.reason


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_auto_off_a_card_keeps_everything_in_place(device: str) -> None:
    plan = plan_memory("auto", device, 64 * GIB)
    assert plan.budget == "high" and flags(plan) == (False, False, False, False)
    assert plan.mode_label == f"Auto: High on {device.upper()} (no offload)"


def test_labels_say_what_the_mode_does() -> None:
    assert plan_memory("8gb", "cuda", None).mode_label == "8 GB (model offload, VAE tiling)"
    assert plan_memory("6gb", "cuda", None).mode_label == "6 GB (sequential offload, VAE tiling, attention slicing)"
    assert plan_memory("6gb", "cpu", None).mode_label == "6 GB on CPU (no offload, VAE tiling, attention slicing)"
    assert plan_memory("auto", "cuda", 12 * GIB).mode_label == "Auto: 12 GB (VAE tiling)"


def test_unknown_budget_is_invalid_params() -> None:
    with pytest.raises(TaskError) as caught:
        plan_memory("4gb", "cuda", None)
    assert caught.value.code == messages.INVALID_PARAMS and "4gb" in caught.value.message
    assert "6gb" in caught.value.hint and "auto" in caught.value.hint


@pytest.mark.parametrize("budget, lower", [("high", "12gb"), ("12gb", "8gb"), ("8gb", "6gb")])
def test_oom_hint_names_the_next_lower_budget(budget: str, lower: str) -> None:
    hint = oom_hint(plan_memory(budget, "cuda", None))
    label = {"12gb": "12 GB", "8gb": "8 GB", "6gb": "6 GB"}[lower]
    assert hint.startswith(f"set VRAM Budget to {label} in the add-on preferences (--vram-budget {lower})")
    assert "width and height" in hint and not hint.endswith(".")


def test_oom_hint_from_auto_follows_the_mode_auto_chose() -> None:
    assert "(--vram-budget 8gb)" in oom_hint(plan_memory("auto", "cuda", 12 * GIB))


def test_oom_hint_at_6gb_says_lower_the_size() -> None:
    hint = oom_hint(plan_memory("6gb", "cuda", None))
    assert hint.startswith("lower the width and height") and "--vram-budget" not in hint


def test_oom_hint_on_cpu_does_not_suggest_offload() -> None:
    hint = oom_hint(plan_memory("high", "cpu", None))
    assert hint.startswith("lower the width and height") and "(--vram-budget 6gb)" in hint
    assert "offload" not in hint


def test_total_vram_is_none_without_a_card() -> None:
    assert total_vram("cpu") is None and total_vram("mps") is None
