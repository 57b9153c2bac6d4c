"""bench/gpu.py without a GPU: it says it skipped and exits 0; ``--flops-only`` counts plausible FLOPs.

The FLOPs are counted on the meta device (shapes only, no memory). Reference: BK-SDM (Kim et al., 2023, table 1)
gives 339 G multiply-accumulates per 512² forward of the SD 1.x UNet (convolutions and linear layers): 2 FLOPs
each, 2 images per classifier-free-guidance step, is 1.36 TFLOP, to which attention's score and value matmuls
add about a sixth. Parameter counts are the published models' (unet/config.json of SD 1.5 and SDXL base 1.0,
control_v11f1p_sd15_depth). Run: ``.venv/bin/python -m pytest tests/unit/test_gpu_bench.py -q``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench" / "gpu.py"
LINE = re.compile(r"^flops (\S+): ([0-9.]+) TFLOP per step.*?(?:, ([0-9.]+)M parameters)?$")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA even on a GPU machine
    return subprocess.run([sys.executable, str(BENCH), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300, check=False)


def test_without_cuda_it_says_it_skipped() -> None:
    proc = run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "bench/gpu.py: skipped: no CUDA device (torch.cuda.is_available() is False)"


def test_flops_only_counts_plausible_flops() -> None:
    proc = run("--flops-only")
    assert proc.returncode == 0, proc.stderr
    found = {m.group(1): (float(m.group(2)), m.group(3)) for m in map(LINE.match, proc.stdout.splitlines()) if m}
    assert set(found) == {"sd15-controlnet", "sd15-unet", "sd15-step", "sdxl-unet", "sdxl-step"}, proc.stdout
    # the full-size architectures, not approximations
    assert found["sd15-unet"][1] == "859.52"
    assert found["sd15-controlnet"][1] == "361.28"
    assert found["sdxl-unet"][1] == "2567.46"
    sd15 = found["sd15-unet"][0]
    assert 1.36 <= sd15 <= 2.0  # 1.36 TFLOP without attention's matmuls (BK-SDM), about 1.6 with them
    assert 0.2 * sd15 <= found["sd15-controlnet"][0] <= 0.6 * sd15  # the encoder half and the mid block
    assert abs(found["sd15-step"][0] - sd15 - found["sd15-controlnet"][0]) < 0.002
    # SDXL at 1024²: four times the latent pixels, a wider and deeper transformer stack
    assert 5 * sd15 <= found["sdxl-unet"][0] <= 15 * sd15
