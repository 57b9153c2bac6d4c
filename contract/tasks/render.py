"""Task "render": a ControlNet-guided render of the scene's passes (one frame)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..schema import ParamError, choice, decode, relative
from .base import TaskOutputs, TaskParams, check_generation, output_file
from .options import ModelOptions

CONTROL_KINDS = ("depth", "normal", "canny")
NORMAL_ENCODINGS = ("bae", "opengl")
MAX_CONTROL_WEIGHT = 2.0
MAX_CANNY_THRESHOLD = 1000
PASSES_FILE = "inputs/passes.exr"
CAMERA_FILE = "inputs/camera.json"


@dataclass(frozen=True)
class ControlParams:
    """One ControlNet: which pass it follows, how strongly, and over which part of denoising."""

    kind: str
    weight: float = 1.0
    start: float = 0.0  # fraction of the denoising steps at which the control starts
    end: float = 1.0  # ... and stops
    model: str = ""  # a registry name; empty: the role controlnet_<kind> of the base model's family

    def __post_init__(self) -> None:
        choice("control", self.kind, CONTROL_KINDS)
        if not 0.0 <= self.weight <= MAX_CONTROL_WEIGHT:
            raise ParamError(f"{self.kind} weight must be between 0 and {MAX_CONTROL_WEIGHT:g}, got {self.weight}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ParamError(f"{self.kind} start and end must satisfy 0 <= start < end <= 1, "
                             f"got {self.start} and {self.end}")


@dataclass(frozen=True)
class RenderOutputs(TaskOutputs):
    image: str = output_file()  # outputs/render.png, 8-bit sRGB
    image_exr: str = output_file()  # outputs/render.exr: the result, the passes and the control images as layers
    control_images: dict[str, str] = output_file({})  # control kind -> its conditioning image (PNG)
    seed: int = 0
    width: int = 0
    height: int = 0
    controls: list[str] = field(default_factory=list)  # the kinds that took part, in order


@dataclass(frozen=True)
class RenderParams(ModelOptions, TaskParams):
    """The passes (``passes``: Combined, Depth, Normal layers) and camera (``camera``) are job inputs."""

    task = "render"
    outputs = RenderOutputs

    prompt: str
    controls: list[ControlParams]  # those of weight 0 are left out
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    canny_low: int = 100
    canny_high: int = 200
    img2img: bool = False  # start from the Combined pass instead of noise
    strength: float = 0.75  # img2img: how far from the Combined pass the result may go
    model: str = ""  # base text-to-image model; empty: the registry's text_to_image role
    normal_encoding: str = "bae"
    passes: str = PASSES_FILE
    camera: str = CAMERA_FILE
    preview_every: int = 2

    def validate(self) -> None:
        check_generation(self, "describe what the render should show")
        self.check_options()
        if not 0 <= self.canny_low < self.canny_high <= MAX_CANNY_THRESHOLD:
            raise ParamError(f"canny thresholds must satisfy 0 <= low < high <= {MAX_CANNY_THRESHOLD}, "
                             f"got {self.canny_low} and {self.canny_high}")
        if not 0.0 < self.strength <= 1.0:
            raise ParamError(f"strength must be above 0 and at most 1, got {self.strength}")
        choice("normal_encoding", self.normal_encoding, NORMAL_ENCODINGS)
        if not isinstance(self.controls, list):
            raise ParamError("controls must be a list of controls such as {\"kind\": \"depth\", \"weight\": 1.0}")
        # Scripts may give plain objects; from here on every control is a ControlParams.
        object.__setattr__(self, "controls", [c if isinstance(c, ControlParams) else decode(ControlParams, c, "control")
                                              for c in self.controls])
        active = self.active_controls()
        if not active and not self.img2img:  # img2img alone starts from the Combined pass, unguided
            raise ParamError("all control weights are zero: give depth, normal or canny a weight above 0, or turn "
                             "img2img on to start from the render without controls")
        kinds = [c.kind for c in active]
        if len(set(kinds)) != len(kinds):
            raise ParamError(f"each control may appear once, got {', '.join(kinds)}")
        relative("passes", self.passes)
        relative("camera", self.camera)

    def active_controls(self) -> list[ControlParams]:
        return [c for c in self.controls if c.weight > 0]
