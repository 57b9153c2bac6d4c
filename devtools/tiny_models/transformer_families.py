"""The tiny pipelines of the transformer families (FLUX.1, FLUX.2 klein, Qwen-Image, Z-Image, SD 3.5) and their
control models: folder names, builders and registry entries, joined into make_tiny by the package.

Each family's builder lives in its own module; a control model is built against its family's tiny transformer
(the same seed), so it fits the base pipeline of its family as a real one fits its base model; FLUX.1 also has a
single-control normal ControlNet, as the built-in registry's. FLUX.1's and
Qwen-Image's and Z-Image's are union ControlNets as the default real ones are: one folder serves depth and canny
(FLUX.1's with InstantX's mode numbers, canny 0 and depth 2); SD 3.5 has one ControlNet per control.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from devtools.tiny_models.flux import build_flux, build_flux_controlnet
from devtools.tiny_models.flux2_klein import build_flux2_klein
from devtools.tiny_models.qwen_image import build_qwen_image, build_qwen_image_controlnet
from devtools.tiny_models.sd3 import build_sd3, build_sd3_controlnet
from devtools.tiny_models.z_image import build_z_image, build_z_image_controlnet

# family -> (text-to-image folder, its builder)
PIPELINES: dict[str, tuple[str, Callable[..., Any]]] = {
    "flux": ("flux-tiny", build_flux),
    "flux2_klein": ("flux2-klein-tiny", build_flux2_klein),
    "qwen_image": ("qwen-image-tiny", build_qwen_image),
    "z_image": ("z-image-tiny", build_z_image),
    "sd3": ("sd3-tiny", build_sd3),
}
FLUX_UNION_MODES = "canny=0,depth=2"
# control folder -> (family, builder, salt, the controls it serves, union modes)
CONTROLS: dict[str, tuple[str, Callable[..., Any], int, tuple[str, ...], str]] = {
    "controlnet-union-flux-tiny": ("flux", build_flux_controlnet, 0, ("depth", "canny"), FLUX_UNION_MODES),
    "controlnet-normal-flux-tiny": ("flux", partial(build_flux_controlnet, union=False), 1, ("normal",), ""),
    "controlnet-union-qwen-image-tiny": ("qwen_image", build_qwen_image_controlnet, 0, ("depth", "canny"), ""),
    "controlnet-union-z-image-tiny": ("z_image", build_z_image_controlnet, 0, ("depth", "canny"), ""),
    "controlnet-depth-sd3-tiny": ("sd3", build_sd3_controlnet, 0, ("depth",), ""),
    "controlnet-canny-sd3-tiny": ("sd3", build_sd3_controlnet, 1, ("canny",), ""),
}


def _control_builder(build: Callable[..., Any], salt: int) -> Callable[[Path, int], Any]:
    def built(scratch: Path, seed: int = 0) -> Any:
        return build(scratch, seed, salt)

    return built


BUILDERS = (*PIPELINES.values(),
            *((folder, _control_builder(build, salt)) for folder, (_, build, salt, _, _) in CONTROLS.items()))

REGISTRY_MODELS: dict[str, dict[str, Any]] = {
    **{folder: {"source": folder, "family": family, "kind": "text_to_image", "tiny": True}
       for family, (folder, _) in PIPELINES.items()},
    **{folder: {"source": folder, "family": family, "kind": "controlnet", "tiny": True,
                **({"control_modes": modes} if modes else {})}
       for folder, (family, _, _, _, modes) in CONTROLS.items()},
}
REGISTRY_ROLES = {f"controlnet_{control}_{family}": folder
                  for folder, (family, _, _, controls, _) in CONTROLS.items() for control in controls}
