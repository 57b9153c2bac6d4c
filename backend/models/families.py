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
from backend.models.family_traits import IMAGE_FAMILIES, TRAITS, VARIANTS, control_family, control_role, pipeline_family
from contract import messages

# The image families (SD 1.5, SDXL, FLUX.1, FLUX.2 klein, Qwen-Image, Z-Image, SD 3.5: family_traits.py) and the
# single-purpose ones.
FAMILIES = (*IMAGE_FAMILIES, "marigold", "shap_e")
FAMILY_NAMES = {**{f: t.name for f, t in TRAITS.items()}, "marigold": "Marigold", "shap_e": "Shap-E"}
_ARTICLES = {**{f: t.article for f, t in TRAITS.items()}, "marigold": "a", "shap_e": "a"}  # "an SDXL model"
KINDS = ("text_to_image", "intrinsics", "normals", "controlnet", "image_to_3d", "ip_adapter")
CONTROL_FAMILIES = tuple(f for f, t in TRAITS.items() if t.control_model)
# The families a kind can be; kinds not listed here (later ones) are not restricted.
KIND_FAMILIES = {"text_to_image": IMAGE_FAMILIES, "intrinsics": ("marigold",),
                 "normals": ("marigold",), "controlnet": CONTROL_FAMILIES, "image_to_3d": ("shap_e",),
                 "ip_adapter": ("sd15", "sdxl")}
CONTROLNET_CLASS = "ControlNetModel"  # what an SD 1.5 / SDXL controlnet folder's config.json must name
CONTROL_CLASSES = {t.control_model for t in TRAITS.values() if t.control_model}
# Control (what the image shows) -> registry role, for SD 1.5; other families' roles add "_<family>".
CONTROLS = ("depth", "normal", "canny")
# Registry role -> the control model's repo, for every family's default control models (family_traits.py).
CONTROLNET_IDS = {control_role(control, family): repo for family, t in TRAITS.items()
                  for control, repo in t.control_ids.items()}
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
    # Transformer families: "gguf" (transformer_file: a GGUF single-file transformer) or "bnb_4bit"
    # (bitsandbytes 4-bit on CUDA); empty: the folder's own weights in the job's dtype (quantized.py).
    quantization: str = ""
    transformer_file: str = ""
    # A union control model: which of its modes each control kind is ("canny=0,depth=2"); empty: one kind only.
    control_modes: str = ""


def controlnet_role(control: str, family: str) -> str:
    """The registry role of the control model for ``control`` on a ``family`` base model.

    ``("depth", "sd15")`` -> ``"controlnet_depth"``, ``("depth", "sdxl")`` -> ``"controlnet_depth_sdxl"``,
    ``("depth", "flux")`` -> ``"controlnet_depth_flux"``. Whether the registry defines the role is
    :meth:`Registry.control`'s business (``controlnet_normal_sdxl`` is not in the built-in registry).
    """
    if control not in CONTROLS:
        raise ModelError(messages.INVALID_PARAMS,
                         f"Unknown control '{control}' (known: {', '.join(CONTROLS)}).",
                         f"Use one of {', '.join(CONTROLS)}.")
    if family not in CONTROL_FAMILIES:
        with_controls = ", ".join(FAMILY_NAMES[f] for f in CONTROL_FAMILIES)
        raise ModelError(messages.MODEL_FAMILY,
                         f"There are no ControlNets for {FAMILY_NAMES.get(family, family)} models.",
                         f"Use a model of a family with ControlNets ({with_controls}) for ControlNet-guided "
                         "rendering, or turn every control off and img2img on to start from the render.")
    return control_role(control, family)


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
        if control_family(cls) is not None:  # FluxControlNetModel, SD3ControlNetModel, ...
            return control_family(cls), cls
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
    return pipeline_family(cls)  # SD 1.5, SDXL and the transformer families (family_traits.py)


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
    want_control = TRAITS[spec.family].control_model if spec.family in TRAITS else CONTROLNET_CLASS
    if spec.kind == "controlnet" and cls != want_control:
        example = next(iter(TRAITS[spec.family].control_ids.values()), "") if spec.family in TRAITS else ""
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a ControlNet, but {folder} holds a "
                         f"{cls or 'model of unknown class'}, not a {want_control}.",
                         f"Point '{spec.name}' at a {FAMILY_NAMES.get(spec.family, spec.family)} ControlNet"
                         f"{f' (such as {example})' if example else ''} in the registry.")
    if spec.kind != "controlnet" and cls in CONTROL_CLASSES:
        raise ModelError(messages.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a {spec.kind} model, but {folder} holds a "
                         f"{cls}, which only guides a text_to_image model.",
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

    By kind for Marigold and image_to_3d (``ShapEImg2ImgPipeline``), the family's control model class for a
    controlnet (a model, not a pipeline: see :func:`controlnet_pipeline_class` for the pipeline it joins), else
    the family's text-to-image pipeline (family_traits.py).
    """
    import diffusers

    if kind in PIPELINE_CLASSES:  # intrinsics, normals, image_to_3d
        return getattr(diffusers, PIPELINE_CLASSES[kind])
    if kind == "controlnet":
        return getattr(diffusers, TRAITS[family].control_model)
    return getattr(diffusers, TRAITS[family].pipelines["text_to_image"])


def variant_class(family: str, variant: str) -> Any:
    """The diffusers pipeline class of ``family`` for ``variant`` (family_traits.VARIANTS); MODEL_FAMILY when
    diffusers has none (FLUX.2 klein has no ControlNet, Qwen-Image no ControlNet inpaint ...)."""
    import diffusers

    if variant not in VARIANTS:
        raise ValueError(f"unknown pipeline variant {variant!r}")
    traits = TRAITS[family]
    if not traits.has(variant):
        have = ", ".join(v.replace("_", " ") for v in traits.pipelines)
        raise ModelError(messages.MODEL_FAMILY,
                         f"{traits.name} models have no {variant.replace('_', ' ')} pipeline in diffusers "
                         f"(they have: {have}).",
                         "Choose a model of another family for this, or change the job's settings "
                         "(see the README's table of families and capabilities).")
    return getattr(diffusers, traits.pipelines[variant])


def controlnet_pipeline_class(family: str, img2img: bool = False, inpaint: bool = False) -> Any:
    """The family's ControlNet [Img2Img | Inpaint] pipeline class (MODEL_FAMILY when diffusers has none)."""
    if img2img and inpaint:
        raise ValueError("a ControlNet pipeline is img2img or inpaint, not both")
    return variant_class(family, "controlnet_inpaint" if inpaint else "controlnet_img2img" if img2img
                         else "controlnet")


def check_components(spec: ModelSpec, folder: Path) -> None:
    """MODEL_MISSING when a text_to_image folder lacks a component its family needs (FLUX.1 without its T5
    text_encoder_2): read from model_index.json and the folder, before any weights load."""
    traits = TRAITS.get(spec.family)
    index = Path(folder) / "model_index.json"
    if traits is None or spec.kind != "text_to_image" or not index.is_file():
        return
    entries = _load_config(index)
    for part in traits.required:
        entry = entries.get(part)
        declared = isinstance(entry, list) and len(entry) == 2 and entry[1] is not None
        if declared and (Path(folder) / part).is_dir():
            continue
        what = _COMPONENT_NAMES.get((spec.family, part), part)
        where = "its model_index.json has no entry for it" if not declared else f"{part}/ is missing"
        raise ModelError(messages.MODEL_MISSING,
                         f"Model '{spec.name}' ({traits.name}) at {folder} has no {part} ({what}): {where}.",
                         f"{traits.name} needs {what}: download the full model (every folder of the repository), or "
                         f"add {part}/ from the base model it was made from.")


# Components artists meet by another name.
_COMPONENT_NAMES = {("flux", "text_encoder_2"): "the T5 text encoder",
                    ("flux", "text_encoder"): "the CLIP text encoder",
                    ("sd3", "text_encoder"): "the CLIP-L text encoder",
                    ("sd3", "text_encoder_2"): "the CLIP-G text encoder",
                    ("qwen_image", "text_encoder"): "the Qwen2.5-VL text encoder",
                    ("z_image", "text_encoder"): "the Qwen3 text encoder",
                    ("flux2_klein", "text_encoder"): "the Qwen3 text encoder"}


def check_size(family: str, width: int, height: int) -> None:
    """INVALID_PARAMS when the family cannot make a ``width`` x ``height`` image (sides not multiples of its VAE
    stride times patch size), with the nearest sizes it can make."""
    traits = TRAITS.get(family)
    if traits is None:
        return
    step = traits.size_multiple
    if width % step == 0 and height % step == 0:
        return

    def near(n: int) -> str:
        low = max(step, n // step * step)
        return f"{low}" if low == n else f"{low} or {low + step}"

    raise ModelError(messages.INVALID_PARAMS,
                     f"{traits.name} makes images whose sides are multiples of {step} pixels; {width} x {height} "
                     "is not.",
                     f"Use a width of {near(width)} and a height of {near(height)}.")


def _family_phrase(family: str) -> str:
    """'an SD 1.5 model', 'a Marigold model', 'a sd3 model' (unknown families as written)."""
    return f"{_ARTICLES.get(family, 'a')} {FAMILY_NAMES.get(family, family)} model"
