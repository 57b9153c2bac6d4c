"""What each image family is: its diffusers classes, the components it needs, the sizes it can make, how it is
guided, and which control models it has.

One :class:`FamilyTraits` per text-to-image family (SD 1.5, SDXL and the transformer families FLUX.1, FLUX.2
klein, Qwen-Image, Z-Image, SD 3.5), so that loading, the size check, the call arguments and seamless tiling read
one table instead of branching on family names. Class names are strings (diffusers is imported where a class is
looked up); every name here exists in diffusers 0.42. Nothing here reads files or loads weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Pipeline variants a task may ask a family for.
VARIANTS = ("text_to_image", "img2img", "inpaint", "controlnet", "controlnet_img2img", "controlnet_inpaint")


@dataclass(frozen=True)
class FamilyTraits:
    family: str
    name: str  # as artists know it: "FLUX.1"
    article: str  # "a FLUX.1 model", "an SD 1.5 model"
    pipelines: dict[str, str]  # variant (VARIANTS) -> diffusers pipeline class; a missing variant: not in diffusers
    control_model: str = ""  # the class a control model folder's config.json names; "": the family has none
    multi_control: str = ""  # what several control models join as; "": one control at a time
    denoiser: str = "unet"  # the pipeline component that denoises: "unet" or "transformer"
    packed: bool = False  # steps on 2 x 2 patch tokens (B, rows * columns, C * 4), not (B, C, h, w) latents
    # VAE stride x the transformer's patch size: width and height must be multiples of it.
    size_multiple: int = 8
    # model_index.json components without which the pipeline cannot run (a null entry or a missing folder).
    required: tuple[str, ...] = ()
    # "cfg": guidance_scale with a negative prompt; "true_cfg": true_cfg_scale with a negative prompt (Qwen-Image);
    # "distilled": guidance_scale is an input of the distilled model (or unused) and there is no negative prompt.
    guidance: str = "cfg"
    flow_matching: bool = False  # samples with its own flow-matching scheduler: the SD sampler names do not apply
    loras: bool = False  # LoRAs load (the LoRA module knows this family's keys)
    default_steps: int = 30
    default_guidance: float = 7.5
    # Control kind -> the control model's registry source by default (the built-in registry's roles).
    control_ids: dict[str, str] = field(default_factory=dict)
    control_licence: str = ""

    def has(self, variant: str) -> bool:
        return variant in self.pipelines

    def phrase(self) -> str:
        return f"{self.article} {self.name} model"


_SD_COMMON = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
_TRANSFORMER = ("transformer", "vae", "scheduler")

TRAITS: dict[str, FamilyTraits] = {t.family: t for t in (
    FamilyTraits(
        "sd15", "SD 1.5", "an",
        {"text_to_image": "StableDiffusionPipeline", "img2img": "StableDiffusionImg2ImgPipeline",
         "inpaint": "StableDiffusionInpaintPipeline", "controlnet": "StableDiffusionControlNetPipeline",
         "controlnet_img2img": "StableDiffusionControlNetImg2ImgPipeline",
         "controlnet_inpaint": "StableDiffusionControlNetInpaintPipeline"},
        control_model="ControlNetModel", multi_control="MultiControlNetModel", required=_SD_COMMON, loras=True,
        control_ids={"depth": "lllyasviel/control_v11f1p_sd15_depth",
                     "normal": "lllyasviel/control_v11p_sd15_normalbae",
                     "canny": "lllyasviel/control_v11p_sd15_canny"}, control_licence="openrail"),
    FamilyTraits(
        "sdxl", "SDXL", "an",
        {"text_to_image": "StableDiffusionXLPipeline", "img2img": "StableDiffusionXLImg2ImgPipeline",
         "inpaint": "StableDiffusionXLInpaintPipeline", "controlnet": "StableDiffusionXLControlNetPipeline",
         "controlnet_img2img": "StableDiffusionXLControlNetImg2ImgPipeline",
         "controlnet_inpaint": "StableDiffusionXLControlNetInpaintPipeline"},
        control_model="ControlNetModel", multi_control="MultiControlNetModel",
        required=(*_SD_COMMON, "text_encoder_2", "tokenizer_2"), loras=True,
        # No SDXL normal ControlNet by default: the role is MODEL_MISSING unless a registry file adds one.
        control_ids={"depth": "diffusers/controlnet-depth-sdxl-1.0", "canny": "diffusers/controlnet-canny-sdxl-1.0"},
        control_licence="openrail++"),
    FamilyTraits(
        "flux", "FLUX.1", "a",
        {"text_to_image": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline",
         "controlnet": "FluxControlNetPipeline", "controlnet_img2img": "FluxControlNetImg2ImgPipeline",
         "controlnet_inpaint": "FluxControlNetInpaintPipeline"},
        control_model="FluxControlNetModel", multi_control="FluxMultiControlNetModel", denoiser="transformer",
        packed=True,
        size_multiple=16, required=(*_TRANSFORMER, "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
        guidance="distilled", flow_matching=True, default_steps=28, default_guidance=3.5,
        # InstantX's union ControlNet: one model, the control kind chosen by its control_mode; Jasper AI's
        # surface-normal ControlNet (NormalBAE maps, as SD 1.5's normalbae) for normals.
        control_ids={"depth": "InstantX/FLUX.1-dev-Controlnet-Union", "canny": "InstantX/FLUX.1-dev-Controlnet-Union",
                     "normal": "jasperai/Flux.1-dev-Controlnet-Surface-Normals"},
        control_licence="flux-1-dev-non-commercial-license"),
    FamilyTraits(
        "flux2_klein", "FLUX.2 klein", "a",
        # No FLUX.2 ControlNet in diffusers 0.42; img2img runs as an inpaint of the whole frame.
        {"text_to_image": "Flux2KleinPipeline", "inpaint": "Flux2KleinInpaintPipeline"},
        denoiser="transformer", packed=True, size_multiple=16, required=(*_TRANSFORMER, "text_encoder", "tokenizer"),
        guidance="distilled", flow_matching=True, default_steps=4, default_guidance=1.0),
    FamilyTraits(
        "qwen_image", "Qwen-Image", "a",
        {"text_to_image": "QwenImagePipeline", "img2img": "QwenImageImg2ImgPipeline",
         "inpaint": "QwenImageInpaintPipeline", "controlnet": "QwenImageControlNetPipeline"},
        # QwenImageMultiControlNetModel holds a single union ControlNet in diffusers 0.42: one control at a time.
        control_model="QwenImageControlNetModel",
        denoiser="transformer", packed=True, size_multiple=16, required=(*_TRANSFORMER, "text_encoder", "tokenizer"),
        guidance="true_cfg", flow_matching=True, default_steps=50, default_guidance=4.0,
        control_ids={"depth": "InstantX/Qwen-Image-ControlNet-Union", "canny": "InstantX/Qwen-Image-ControlNet-Union"},
        control_licence="apache-2.0"),
    FamilyTraits(
        "z_image", "Z-Image", "a",
        {"text_to_image": "ZImagePipeline", "img2img": "ZImageImg2ImgPipeline", "inpaint": "ZImageInpaintPipeline",
         "controlnet": "ZImageControlNetPipeline", "controlnet_inpaint": "ZImageControlNetInpaintPipeline"},
        control_model="ZImageControlNetModel", denoiser="transformer", size_multiple=16,
        required=(*_TRANSFORMER, "text_encoder", "tokenizer"), guidance="cfg", flow_matching=True,
        default_steps=9, default_guidance=0.0,
        control_ids={"depth": "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union",
                     "canny": "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union"},
        control_licence="apache-2.0"),
    FamilyTraits(
        "sd3", "SD 3.5", "an",
        {"text_to_image": "StableDiffusion3Pipeline", "img2img": "StableDiffusion3Img2ImgPipeline",
         "inpaint": "StableDiffusion3InpaintPipeline", "controlnet": "StableDiffusion3ControlNetPipeline"},
        control_model="SD3ControlNetModel", multi_control="SD3MultiControlNetModel", denoiser="transformer",
        size_multiple=16,
        required=(*_TRANSFORMER, "text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
        guidance="cfg", flow_matching=True, default_steps=28, default_guidance=3.5,
        control_ids={"depth": "stabilityai/stable-diffusion-3.5-large-controlnet-depth",
                     "canny": "stabilityai/stable-diffusion-3.5-large-controlnet-canny"},
        control_licence="stabilityai-ai-community"),
)}

IMAGE_FAMILIES = tuple(TRAITS)
TRANSFORMER_FAMILIES = tuple(f for f, t in TRAITS.items() if t.denoiser == "transformer")
# model_index.json's _class_name prefix -> family, longest first (Flux2Klein before Flux2 before Flux).
_PIPELINE_PREFIXES = (("StableDiffusionXL", "sdxl"), ("StableDiffusion3", "sd3"), ("StableDiffusion", "sd15"),
                      ("Flux2Klein", "flux2_klein"), ("Flux2", ""), ("Flux3", ""), ("FluxKontext", ""),
                      ("Flux", "flux"), ("QwenImage21", ""), ("QwenImageEdit", ""), ("QwenImageLayered", ""),
                      ("QwenImage", "qwen_image"), ("ZImageOmni", ""), ("ZImage", "z_image"))


def pipeline_family(class_name: str) -> str | None:
    """The image family of a pipeline class name from model_index.json; None when it is not one we run (FLUX.2
    [dev] and FLUX.1 Kontext, Qwen-Image-Edit, Z-Image Omni are other architectures or editing models)."""
    for prefix, family in _PIPELINE_PREFIXES:
        if class_name.startswith(prefix):
            return family or None
    return None


def control_family(class_name: str) -> str | None:
    """The family whose control model a config.json class names (ControlNetModel: SD 1.5 or SDXL, told apart by
    the caller from the config); None when it is no control model."""
    for family, traits in TRAITS.items():
        if traits.control_model and traits.control_model == class_name and traits.control_model != "ControlNetModel":
            return family
    return None


def traits(family: str) -> FamilyTraits | None:
    return TRAITS.get(family)


def control_role(control: str, family: str) -> str:
    """Registry role of ``family``'s control model for ``control``: controlnet_depth (SD 1.5),
    controlnet_depth_sdxl, controlnet_depth_flux ..."""
    return f"controlnet_{control}" + ("" if family == "sd15" else f"_{family}")


def parse_control_modes(text: str) -> dict[str, int]:
    """A union control model's modes as the registry writes them ("canny=0,depth=2") -> {"canny": 0, "depth": 2}.
    Raises ValueError on anything else."""
    modes: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, sep, value = item.partition("=")
        if not sep or not kind.strip() or not value.strip().isdigit():
            raise ValueError(f"control modes are written kind=number[,kind=number], got {text!r}")
        modes[kind.strip()] = int(value)
    return modes
