"""What an artist adds to a base model for one job: LoRAs, a sampler, a reference image (IP-Adapter), and
the licence policy. Shared by the generating tasks (texture, render, project_texture); the policy alone also
by the other tasks that load models (pbr, mesh).

The fields are keyword-only, so a task's own required fields (its prompt) keep their place. LoRA files and
the reference image are job inputs like any other file: the add-on and the command line put them in the job
folder (a hard link where it can), and a remote server receives them by content, never by a client's path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..schema import ParamError, choice, decode, relative

# Samplers by the names artists know them; "" is the family's default (SCHEDULER_DEFAULTS), "model" the one the
# model folder ships with.
SCHEDULERS = ("euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "dpmpp_sde_karras", "unipc", "ddim", "lcm", "pndm",
              "model")
SCHEDULER_LABELS = {
    "euler": "Euler", "euler_a": "Euler Ancestral", "dpmpp_2m": "DPM++ 2M", "dpmpp_2m_karras": "DPM++ 2M Karras",
    "dpmpp_sde_karras": "DPM++ SDE Karras", "unipc": "UniPC", "ddim": "DDIM", "lcm": "LCM (for LCM models and LoRAs)",
    "pndm": "PNDM", "model": "As the model ships",
}
# What most artists run SD 1.5 and SDXL with at 20-30 steps.
SCHEDULER_DEFAULTS = {"sd15": "dpmpp_2m_karras", "sdxl": "dpmpp_2m_karras"}
MAX_LORAS = 8
MAX_LORA_WEIGHT = 4.0  # slider LoRAs go negative; beyond +-4 any LoRA is noise
LORA_SUFFIX = ".safetensors"  # pickle LoRAs (.pt, .ckpt) can run code when loaded: not taken
LORA_DIR = "inputs/loras"
REFERENCE_STEM = "inputs/reference"
MAX_REFERENCE_STRENGTH = 1.0
REFERENCE_COLORSPACES = ("srgb", "linear")


def lora_input(index: int, filename: str) -> str:
    """Where LoRA ``index`` (in the order given) goes in the job folder, keeping the artist's file name."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in filename)[:80] or "lora.safetensors"
    return f"{LORA_DIR}/{index:02d}-{stem}"


def reference_input(suffix: str) -> str:
    """Where the reference image goes in the job folder (its own suffix kept: PNG, JPEG, EXR ...)."""
    return REFERENCE_STEM + (suffix.lower() if suffix.startswith(".") and suffix[1:].isalnum() else ".png")


@dataclass(frozen=True)
class LoraParams:
    file: str  # job-relative .safetensors
    weight: float = 1.0
    name: str = ""  # the artist's name for it (its file name), recorded in job.json

    def __post_init__(self) -> None:
        relative("lora file", self.file)
        if not self.file.lower().endswith(LORA_SUFFIX):
            raise ParamError(f"LoRA {self.name or self.file} must be a {LORA_SUFFIX} file (pickle LoRAs can run code "
                             "when loaded)")
        if not -MAX_LORA_WEIGHT <= self.weight <= MAX_LORA_WEIGHT:
            raise ParamError(f"LoRA weight must be between {-MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}, "
                             f"got {self.weight}")


@dataclass(frozen=True)
class LicencePolicy:
    # Refuse models whose stated licence forbids commercial use (the "Commercial Work" preference).
    commercial: bool = field(default=False, kw_only=True)


@dataclass(frozen=True)
class ModelOptions(LicencePolicy):
    loras: list[LoraParams] = field(default_factory=list, kw_only=True)
    scheduler: str = field(default="", kw_only=True)  # one of SCHEDULERS; "": the family's default
    reference: str = field(default="", kw_only=True)  # job-relative style/reference image; "": none
    # How a .npy reference's values are encoded (the add-on writes Blender images' pixels so); files say it themselves.
    reference_colorspace: str = field(default="srgb", kw_only=True)
    reference_strength: float = field(default=0.6, kw_only=True)  # IP-Adapter scale

    def check_options(self) -> None:
        """Validate (and type) the options; each generating task's ``validate`` calls it."""
        if self.scheduler:
            choice("scheduler", self.scheduler, SCHEDULERS)
        if not isinstance(self.loras, list):
            raise ParamError('loras must be a list such as [{"file": "inputs/loras/00-style.safetensors", '
                             '"weight": 0.8}]')
        if len(self.loras) > MAX_LORAS:
            raise ParamError(f"at most {MAX_LORAS} LoRAs per job, got {len(self.loras)}")
        # Scripts may give plain objects; from here on every LoRA is a LoraParams.
        typed = [lora if isinstance(lora, LoraParams) else _lora(lora) for lora in self.loras]
        object.__setattr__(self, "loras", typed)
        files = [lora.file for lora in self.loras]
        if len(set(files)) != len(files):
            raise ParamError("each LoRA file may appear once")
        if self.reference:
            relative("reference", self.reference)
        choice("reference_colorspace", self.reference_colorspace, REFERENCE_COLORSPACES)
        if not 0.0 <= self.reference_strength <= MAX_REFERENCE_STRENGTH:
            raise ParamError(f"reference strength must be between 0 and {MAX_REFERENCE_STRENGTH:g}, "
                             f"got {self.reference_strength}")

    def active_loras(self) -> list[LoraParams]:
        """The LoRAs that change anything: weight 0 is the same as no LoRA."""
        return [lora for lora in self.loras if lora.weight != 0.0]


def _lora(data: Any) -> LoraParams:
    return decode(LoraParams, data, "lora")
