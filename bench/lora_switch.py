"""Switching LoRAs between jobs on a warm pipeline against reloading the pipeline with the other LoRA.

    python bench/lora_switch.py [TINY_DIR] [--repeat 7]

TINY_DIR: a make-tiny folder (with loras/); without it the tiny SD 1.5 and SDXL pipelines and their LoRAs are
built into a temporary folder. Warm: one StableDiffusionPipeline holds both LoRAs (each loaded once, before timing);
every job switches with ``apply_loras`` (style-a, then style-b, alternating) and ``clear_loras`` after it, as the
backend does. Cold: every job loads the pipeline with ``from_pretrained`` and then ``load_lora_weights`` the other
LoRA. CPU, float32. Prints the median milliseconds per switch of both and the ratio (goal: >= 10x).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: `backend` is top level
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from backend.models.lora import LoraFile, apply_loras, clear_loras  # noqa: E402
from devtools.tiny_models import SD15_DIR, SDXL_DIR, build_sd15, build_sdxl  # noqa: E402
from devtools.tiny_models import lora as tiny_loras  # noqa: E402


def build_tiny(dest: Path) -> Path:
    """Only what this benchmark needs: the SD 1.5 and SDXL pipelines (write_tiny reads both) and the LoRAs."""
    for name, build in ((SD15_DIR, build_sd15), (SDXL_DIR, build_sdxl)):
        build(dest, 0).save_pretrained(str(dest / name), safe_serialization=True)
    tiny_loras.write_tiny(dest, 0)
    return dest


def lora_file(path: Path) -> LoraFile:
    return LoraFile(path, 1.0, hashlib.sha256(path.read_bytes()).hexdigest(), path.stem)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("tiny_dir", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    import torch
    from diffusers import StableDiffusionPipeline

    folder = args.tiny_dir or build_tiny(Path(tempfile.mkdtemp(prefix="sd-lora-bench-")))
    model = str(folder / SD15_DIR)
    files = [lora_file(folder / tiny_loras.LORA_DIR / name) for name in (tiny_loras.SD15_A, tiny_loras.SD15_B)]

    def load() -> Any:
        pipe = StableDiffusionPipeline.from_pretrained(model, dtype=torch.float32, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    warm = load()
    for lora in files:  # each LoRA loaded once, as the first job that uses it would
        apply_loras(warm, "sd15", [lora])
    clear_loras(warm)
    switches = []
    for job in range(2 * args.repeat):
        started = time.perf_counter()
        apply_loras(warm, "sd15", [files[job % 2]])
        clear_loras(warm)
        switches.append(time.perf_counter() - started)
    reloads = []
    for job in range(args.repeat):
        started = time.perf_counter()
        pipe = load()
        pipe.load_lora_weights(str(files[job % 2].path), adapter_name="job")
        reloads.append(time.perf_counter() - started)
        del pipe
    switch_ms, reload_ms = 1000 * statistics.median(switches), 1000 * statistics.median(reloads)
    print(f"tiny SD 1.5 ({folder}), two kohya LoRAs, CPU float32, median of {len(switches)} switches / "
          f"{len(reloads)} reloads")
    print(f"{'switch on a warm pipeline':<34} {switch_ms:9.2f} ms")
    print(f"{'reload pipeline + other LoRA':<34} {reload_ms:9.2f} ms")
    print(f"ratio {reload_ms / switch_ms:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
