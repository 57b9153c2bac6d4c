"""Families and kinds of models, and what a model folder's JSON config says about them.

The supported families (SD 1.5, SDXL, Marigold, Shap-E), the kinds (roles' model types) and the
families each kind accepts, the default ControlNet / Marigold / Shap-E repo ids, :class:`ModelSpec`,
the checks that read a folder's ``model_index.json`` / ``config.json`` (family, kind, weights) before
any weights load, and the diffusers classes a model and a ControlNet pipeline load with. Nothing here
reads the registry or loads weights; diffusers is imported inside the class lookups.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.models.errors import ModelError
from contract import messages

FAMILIES = ("sd15", "sdxl", "marigold", "shap_e")
FAMILY_NAMES = {"sd15": "SD 1.5", "sdxl": "SDXL", "marigold": "Marigold", "shap_e": "Shap-E"}
_ARTICLES = {"sd15": "an", "sdxl": "an", "marigold": "a", "shap_e": "a"}  # "an SDXL model", "a Marigold model"
KINDS = ("text_to_image", "intrinsics", "normals", "controlnet", "image_to_3d", "ip_adapter")
# The families a kind can be; kinds not listed here (later ones) are not restricted.
KIND_FAMILIES = {"text_to_image": ("sd15", "sdxl"), "intrinsics": ("marigold",),
                 "normals": ("marigold",), "controlnet": ("sd15", "sdxl"), "image_to_3d": ("shap_e",),
                 "ip_adapter": ("sd15", "sdxl")}
CONTROLNET_CLASS = "ControlNetModel"  # what a controlnet folder's config.json must name
# Control (what the image shows) -> registry role, for SD 1.5; SDXL roles add "_sdxl".
CONTROLS = ("depth", "normal", "canny")
CONTROLNET_IDS = {
    "controlnet_depth": "lllyasviel/control_v11f1p_sd15_depth",
    "controlnet_normal": "lllyasviel/control_v11p_sd15_normalbae",
    "controlnet_canny": "lllyasviel/control_v11p_sd15_canny",
    "controlnet_depth_sdxl": "diffusers/controlnet-depth-sdxl-1.0",
    "controlnet_canny_sdxl": "diffusers/controlnet-canny-sdxl-1.0",
    # No SDXL normal ControlNet by default: resolve("controlnet_normal_sdxl") is MODEL_MISSING
    # unless a registry file adds one.
}
SD2_CROSS_ATTENTION_DIM = 1024  # OpenCLIP ViT-H features: SD 2.x (SD 1.5: 768, SDXL: 2048)
# Marigold kinds -> the diffusers pipeline class their model_index.json must name.
MARIGOLD_PIPELINES = {"intrinsics": "MarigoldIntrinsicsPipeline",
                      "normals": "MarigoldNormalsPipeline"}
MARIGOLD_INTRINSICS_ID = "prs-eth/marigold-iid-appearance-v1-1"  # albedo, roughness, metallicity
MARIGOLD_NORMALS_ID = "prs-eth/marigold-normals-v1-1"
SHAP_E_IMG2IMG_ID = "openai/shap-e-img2img"
IP_ADAPTER_ID = "h94/IP-Adapter"  # both families' adapters and image encoders, in subfolders
# Kinds served by exactly one diffusers pipeline class (what model_index.json must name), and a
# model of that class to suggest.
PIPELINE_CLASSES = {**MARIGOLD_PIPELINES, "image_to_3d": "ShapEImg2ImgPipeline"}
EXAMPLE_IDS = {"intrinsics": MARIGOLD_INTRINSICS_ID, "normals": MARIGOLD_NORMALS_ID,
               "image_to_3d": SHAP_E_IMG2IMG_ID}
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry key, e.g. "sd15"
    source: str  # Hugging Face repo id, or an absolute local folder path
    family: str  # one of FAMILIES
    kind: str  # one of KINDS ("text_to_image", "intrinsics", "normals"), or a later kind
    tiny: bool = False  # built by make-tiny (random weights)
    # A single-file checkpoint (source: a .safetensors file): the registry model name or folder holding the
    # family's diffusers configs its components are built from; empty: found by family (checkpoint.py).
    config: str = ""
    licence: str = ""  # as the registry states it (SPDX-like id); empty: read from the model card if any
    # ip_adapter: the weights file inside source, and the folder of its CLIP image encoder inside source.
    weight_name: str = ""
    image_encoder: str = ""


def controlnet_role(control: str, family: str) -> str:
    """The registry role of the ControlNet for ``control`` on a ``family`` base model.

    ``("depth", "sd15")`` -> ``"controlnet_depth"``, ``("depth", "sdxl")`` ->
    ``"controlnet_depth_sdxl"``. Whether the registry defines the role is :meth:`Registry.resolve`'s
    business (``controlnet_normal_sdxl`` is not in the built-in registry).
    """
    if control not in CONTROLS:
        raise ModelError(messages.INVALID_PARAMS,
                         f"Unknown control '{control}' (known: {', '.join(CONTROLS)}).",
                         f"Use one of {', '.join(CONTROLS)}.")
    if family not in KIND_FAMILIES["controlnet"]:
        raise ModelError(messages.MODEL_FAMILY,
                         f"There are no ControlNets for {FAMILY_NAMES.get(family, family)} models.",
                         "Use an SD 1.5 or SDXL model for ControlNet-guided rendering.")
    return f"controlnet_{control}" + ("_sdxl" if family == "sdxl" else "")


# --- folder checks ---------------------------------------------------------------------


def detect_family(folder: Path) -> tuple[str | None, str]:
    """(family or None when unsupported, class name) from the folder's JSON config.

    A pipeline folder has ``model_index.json``; a single model (a ControlNet) ``config.json``.
    """
    index = folder / "model_index.json"
    if index.is_file():
        cls = str(_load_config(index).get("_class_name", ""))
        return _family_of_pipeline(cls), cls
    config = folder / "config.json"
    if config.is_file():
        data = _load_config(config)
        cls = str(data.get("_class_name", ""))
        if cls not in (CONTROLNET_CLASS, "UNet2DConditionModel"):
            return None, cls
        if data.get("addition_embed_type") == "text_time":  # SDXL's size/crop conditioning
            return "sdxl", cls
        if data.get("cross_attention_dim") == SD2_CROSS_ATTENTION_DIM:  # SD 2.x: unsupported
            return None, cls
        return "sd15", cls
    raise ModelError(messages.MODEL_MISSING,
                     f"{folder} holds neither model_index.json nor config.json: "
                     "not a diffusers model folder.",
                     "Point the registry at a diffusers folder (saved with save_pretrained) "
                     "or a Hugging Face repo id.")


def _family_of_pipeline(cls: str) -> str | None:
    if cls.startswith("Marigold"):  # MarigoldIntrinsicsPipeline, MarigoldNormalsPipeline, ...
        return "marigold"
    if cls.startswith("ShapE"):  # ShapEImg2ImgPipeline (image to 3D), ShapEPipeline (text to 3D)
        return "shap_e"
    if cls.startswith("StableDiffusionXL"):
        return "sdxl"
    if cls.startswith("StableDiffusion3"):  # a different architecture despite the prefix
        return None
    if cls.startswith("StableDiffusion"):
        return "sd15"
    return None


def _load_config(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(messages.MODEL_MISSING, f"Cannot read {file}: {exc}",
                         "The model folder looks damaged; download or rebuild it.") from None
    return data if isinstance(data, dict) else {}


def check_family(spec: ModelSpec, folder: Path) -> None:
    """Raise MODEL_FAMILY when the folder's model is not of ``spec.family`` (no weights read)."""
    found, cls = detect_family(Path(folder))
    want = FAMILY_NAMES.get(spec.family, spec.family)
    if found is None:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is declared {want}, but {folder} holds a "
                         f"{cls or 'model of unknown class'}, which is not a supported family "
                         f"({', '.join(FAMILY_NAMES.values())}).",
                         f"Choose a {want} model for '{spec.name}' in the registry.")
    if found != spec.family:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is declared {want}, but {folder} holds "
                         f"{_ARTICLES[found]} {FAMILY_NAMES[found]} model ({cls}).",
                         f"Set \"family\": \"{found}\" for '{spec.name}' in the registry, or "
                         f"point it at a {want} model.")


def check_kind(spec: ModelSpec, folder: Path) -> None:
    """Raise MODEL_FAMILY when the model cannot serve ``spec.kind`` (no weights read).

    The declared family must be one the kind accepts (text_to_image and controlnet: SD 1.5 or
    SDXL; intrinsics and normals: Marigold; image_to_3d: Shap-E), a Marigold kind and image_to_3d
    need exactly their pipeline class (a Marigold depth or normals folder is no intrinsics model, a
    text-to-3D ShapEPipeline no image_to_3d model), a controlnet a ControlNetModel folder, and no
    other kind a ControlNetModel. Call after check_family.
    """
    families = KIND_FAMILIES.get(spec.kind)
    if families is not None and spec.family not in families:
        wanted = " or ".join(FAMILY_NAMES[f] for f in families)
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a {spec.kind} model, which must be "
                         f"{_ARTICLES[families[0]]} {wanted} model, but it is declared "
                         f"{FAMILY_NAMES.get(spec.family, spec.family)}.",
                         f"Point '{spec.name}' at a {wanted} model in the registry, or give it "
                         "the kind that fits it.")
    _, cls = detect_family(Path(folder))
    if spec.kind == "controlnet" and cls != CONTROLNET_CLASS:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a ControlNet, but {folder} holds a "
                         f"{cls or 'model of unknown class'}, not a {CONTROLNET_CLASS}.",
                         f"Point '{spec.name}' at a ControlNet (such as "
                         f"{CONTROLNET_IDS['controlnet_depth']}) in the registry.")
    if spec.kind != "controlnet" and cls == CONTROLNET_CLASS:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a {spec.kind} model, but {folder} holds a "
                         f"{CONTROLNET_CLASS}, which only guides a text_to_image model.",
                         f"Give '{spec.name}' \"kind\": \"controlnet\" in the registry, or point it "
                         f"at a {spec.kind} model.")
    want_cls = PIPELINE_CLASSES.get(spec.kind)
    if want_cls is None:
        return
    if cls != want_cls:
        example = EXAMPLE_IDS[spec.kind]
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a {spec.kind} model, but {folder} holds "
                         f"a {cls or 'model of unknown class'}, not a {want_cls}.",
                         f"Point '{spec.name}' at a {want_cls} model (such as {example}) in the "
                         "registry.")


def weights_problem(folder: Path, allow_unsafe: bool = False) -> str | None:
    """Why the folder's weights cannot load (incomplete, pickle only), or None when fine."""
    index = folder / "model_index.json"
    if index.is_file():
        parts = [k for k, v in _load_config(index).items()
                 if not k.startswith("_") and isinstance(v, list) and v and v[0] is not None]
    else:
        parts = [""]
    for part in parts:
        sub = folder / part
        if not (sub / "config.json").is_file():  # tokenizers, schedulers: no weights
            if part and not sub.is_dir():
                return f"incomplete: {part}/ is missing in {folder}"
            continue
        files = [p.name for p in sub.iterdir() if p.is_file()]
        safe = any(n.endswith(".safetensors") for n in files)
        pickle = any(n.endswith(_PICKLE_SUFFIXES) for n in files)
        label = f"{part}/" if part else str(folder)
        if not safe and not pickle:
            return f"incomplete: no weights in {label}"
        if not safe and not allow_unsafe:
            return f"no safetensors in {label} (only pickle weights, which can run code when loaded)"
    return None


# --- diffusers classes ------------------------------------------------------------------


def pipeline_class(family: str, kind: str = "text_to_image") -> Any:
    """The diffusers class a model loads with (``from_pretrained``).

    By kind for Marigold and image_to_3d (``ShapEImg2ImgPipeline``), ``ControlNetModel`` for a
    controlnet (a model, not a pipeline: see :func:`controlnet_pipeline_class` for the pipeline it
    joins), else the family's pipeline.
    """
    from diffusers import (
        ControlNetModel,
        MarigoldIntrinsicsPipeline,
        MarigoldNormalsPipeline,
        ShapEImg2ImgPipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    if kind == "image_to_3d":
        return ShapEImg2ImgPipeline
    if kind == "intrinsics":
        return MarigoldIntrinsicsPipeline
    if kind == "normals":
        return MarigoldNormalsPipeline
    if kind == "controlnet":
        return ControlNetModel
    return {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}[family]


def controlnet_pipeline_class(family: str, img2img: bool = False, inpaint: bool = False) -> Any:
    """StableDiffusion[XL]ControlNet[Img2Img|Inpaint]Pipeline for an SD 1.5 or SDXL base model."""
    from diffusers import (
        StableDiffusionControlNetImg2ImgPipeline,
        StableDiffusionControlNetInpaintPipeline,
        StableDiffusionControlNetPipeline,
        StableDiffusionXLControlNetImg2ImgPipeline,
        StableDiffusionXLControlNetInpaintPipeline,
        StableDiffusionXLControlNetPipeline,
    )

    if img2img and inpaint:
        raise ValueError("a ControlNet pipeline is img2img or inpaint, not both")
    if inpaint:
        return {"sd15": StableDiffusionControlNetInpaintPipeline,
                "sdxl": StableDiffusionXLControlNetInpaintPipeline}[family]
    return {("sd15", False): StableDiffusionControlNetPipeline,
            ("sd15", True): StableDiffusionControlNetImg2ImgPipeline,
            ("sdxl", False): StableDiffusionXLControlNetPipeline,
            ("sdxl", True): StableDiffusionXLControlNetImg2ImgPipeline}[(family, img2img)]


def _family_phrase(family: str) -> str:
    """'an SD 1.5 model', 'a Marigold model', 'a sd3 model' (unknown families as written)."""
    return f"{_ARTICLES.get(family, 'a')} {FAMILY_NAMES.get(family, family)} model"
