"""Which pipeline a render runs for its family and controls, and the control arguments under that pipeline's names.

The families' pipelines differ in what they have (Qwen-Image, Z-Image and SD 3.5 have no ControlNet img2img
pipeline in diffusers 0.42, FLUX.2 klein no ControlNet at all, Z-Image's takes one control at a time and no start
or end) and in what they call things (an SD ControlNet text-to-image pipeline takes the control image as
``image``, the others as ``control_image``; FLUX union ControlNets take the control kind as ``control_mode``).
:func:`guided_call` decides everything from the class names before any weights load, so a job the family cannot
run is refused with what to change.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from backend.models import ModelSpec, variant_class
from backend.models.family_traits import TRAITS, parse_control_modes
from backend.tasks.context import invalid
from contract.tasks import ControlParams


@dataclass(frozen=True)
class GuidedCall:
    variant: str  # family_traits.VARIANTS: controlnet, controlnet_img2img, controlnet_inpaint, img2img or inpaint
    call_params: frozenset[str]  # what the variant's __call__ takes

    def control_kwargs(self, controls: list[ControlParams], specs: list[ModelSpec],
                       images: list[Any]) -> dict[str, Any]:
        """Control images, weights, start and end (plain values for one control, lists for several) and union
        modes, under this pipeline's names."""
        single = len(controls) == 1

        def each(values: list[Any]) -> Any:
            return values[0] if single else values

        key = "control_image" if "control_image" in self.call_params else "image"
        kwargs: dict[str, Any] = {key: each(images),
                                  "controlnet_conditioning_scale": each([c.weight for c in controls])}
        if "control_guidance_start" in self.call_params:
            kwargs.update(control_guidance_start=each([c.start for c in controls]),
                          control_guidance_end=each([c.end for c in controls]))
        modes = [parse_control_modes(spec.control_modes).get(c.kind) for c, spec in zip(controls, specs, strict=True)]
        if any(mode is not None for mode in modes) and "control_mode" in self.call_params:
            kwargs["control_mode"] = each(modes)
        return kwargs

    def accepted(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` less what this pipeline does not take (width and height on an img2img pipeline)."""
        return {key: value for key, value in kwargs.items() if key in self.call_params}


def guided_call(family: str, controls: list[ControlParams], specs: list[ModelSpec], img2img: bool,
                inpaint: bool = False) -> GuidedCall:
    """The call a render (or a projection view: ``inpaint``) runs; INVALID_PARAMS / MODEL_FAMILY before anything
    loads when the family cannot run it."""
    traits = TRAITS[family]
    if controls:
        variant = "controlnet_inpaint" if inpaint else "controlnet_img2img" if img2img else "controlnet"
        if not traits.has(variant):
            turn = ("turn the controls off to start from the render without them, or turn img2img off" if img2img
                    else "turn Sequential off so that each view is generated on its own" if inpaint
                    else "use a family whose table entry has it (README)")
            raise invalid(f"{traits.name} has no {variant.replace('_', ' ')} pipeline in diffusers", turn)
        if len(controls) > 1 and not traits.multi_control:
            raise invalid(f"{traits.name} ControlNet pipelines take one control at a time, got {len(controls)}",
                          "keep one control (depth or canny) and turn the others off")
    else:
        variant = "inpaint" if inpaint else "img2img" if traits.has("img2img") else "inpaint"
        if not traits.has(variant):
            raise invalid(f"{traits.name} has no img2img or inpaint pipeline in diffusers", "use another family")
    call_params = frozenset(inspect.signature(variant_class(family, variant).__call__).parameters)
    if controls and "control_guidance_start" not in call_params and any(
            c.start != 0.0 or c.end != 1.0 for c in controls):
        raise invalid(f"{traits.name} ControlNets act on every step: a control's start and end cannot be set",
                      "set each control's start to 0 and end to 1")
    for control, spec in zip(controls, specs, strict=True):
        modes = parse_control_modes(spec.control_modes)
        if modes and control.kind not in modes:
            raise invalid(f"the union control model '{spec.name}' has no {control.kind} mode (it has: "
                          f"{', '.join(modes)})", f"turn the {control.kind} control off, or choose another model")
    return GuidedCall(variant, call_params)
