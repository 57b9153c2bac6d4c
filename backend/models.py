"""Model registry, families, loading and caching of pipelines.

A registry maps roles (``text_to_image``, ``intrinsics``, ``normals``, the ControlNets
``controlnet_depth`` ..., ``image_to_3d``) to named models; a model is a Hugging Face repo
id or a local diffusers folder. Loading goes through diffusers' real ``from_pretrained``,
offline first, safetensors only unless the user opts in. The family of a folder is read from
its JSON config before any weights load, so mixing SD 1.5 and SDXL parts is a clear error
instead of a shape mismatch deep inside a pipeline.

Kinds and families: ``text_to_image`` models are SD 1.5 or SDXL pipelines; ``intrinsics`` and
``normals`` models are Marigold pipelines (family ``marigold``: an SD-2-style UNet fine-tuned
to map an image to albedo / material maps or to camera-space normals), loaded as diffusers'
``MarigoldIntrinsicsPipeline`` and ``MarigoldNormalsPipeline``. ``controlnet`` models are a
single diffusers ``ControlNetModel`` (a folder with ``config.json``, no ``model_index.json``) of
family SD 1.5 or SDXL; :meth:`PipelineCache.controlnet_pipeline` wires one or several of them
into the ControlNet pipeline of their base ``text_to_image`` model, which must be the same family.
``image_to_3d`` models are diffusers' ``ShapEImg2ImgPipeline`` (family ``shap_e``: a CLIP image
encoder, a prior transformer denoising a latent, and a renderer turning that latent into the weights
of a small signed-distance / colour MLP that marching cubes turns into a mesh).

torch, diffusers and huggingface_hub are imported inside functions: reading and listing the
registry stays light.
"""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backend import protocol

if TYPE_CHECKING:
    import torch

FAMILIES = ("sd15", "sdxl", "marigold", "shap_e")
FAMILY_NAMES = {"sd15": "SD 1.5", "sdxl": "SDXL", "marigold": "Marigold", "shap_e": "Shap-E"}
_ARTICLES = {"sd15": "an", "sdxl": "an", "marigold": "a", "shap_e": "a"}  # "an SDXL model", "a Marigold model"
KINDS = ("text_to_image", "intrinsics", "normals", "controlnet", "image_to_3d")
# The families a kind can be; kinds not listed here (later ones) are not restricted.
KIND_FAMILIES = {"text_to_image": ("sd15", "sdxl"), "intrinsics": ("marigold",),
                 "normals": ("marigold",), "controlnet": ("sd15", "sdxl"), "image_to_3d": ("shap_e",)}
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
# Kinds served by exactly one diffusers pipeline class (what model_index.json must name), and a
# model of that class to suggest.
PIPELINE_CLASSES = {**MARIGOLD_PIPELINES, "image_to_3d": "ShapEImg2ImgPipeline"}
EXAMPLE_IDS = {"intrinsics": MARIGOLD_INTRINSICS_ID, "normals": MARIGOLD_NORMALS_ID,
               "image_to_3d": SHAP_E_IMG2IMG_ID}
REGISTRY_FORMAT = 1
REGISTRY_FILE = "registry.json"
ENV_REGISTRY = "SCENE_DIFFUSION_MODELS"
MAKE_TINY = "python -m backend models make-tiny DIR"

# "owner/name": what a Hugging Face repo id looks like (anything else is a folder).
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


class ModelError(Exception):
    """A user-facing model problem: ``code`` is a protocol error code, ``hint`` how to fix it."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ModelSpec:
    name: str  # registry key, e.g. "sd15"
    source: str  # Hugging Face repo id, or an absolute local folder path
    family: str  # one of FAMILIES
    kind: str  # one of KINDS ("text_to_image", "intrinsics", "normals"), or a later kind
    tiny: bool = False  # built by make-tiny (random weights)


# --- registry --------------------------------------------------------------------------


@dataclass
class Registry:
    path: Path | None  # file it was read from (None = built-in default)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)  # role -> model name

    def where(self) -> str:
        return f"registry file {self.path}" if self.path else "built-in registry"

    def fix_hint(self) -> str:
        edit = (f"Edit the registry file {self.path}" if self.path
                else f"Write a registry file ({REGISTRY_FILE})")
        return (f"{edit}, set {ENV_REGISTRY} to another registry file or folder, or run "
                f"`{MAKE_TINY}` and set {ENV_REGISTRY}=DIR for small offline test models.")

    def resolve(self, role: str, name: str | None = None) -> ModelSpec:
        """The model for ``role``; an explicit model ``name`` overrides the role's default."""
        if name is not None:
            return self._named(name, f"model '{name}' requested for role '{role}'")
        if role not in self.roles:
            known = ", ".join(sorted(self.roles)) or "none"
            raise ModelError(protocol.MODEL_MISSING,
                             f"No model for role '{role}' in the {self.where()} "
                             f"(roles defined: {known}).", self.fix_hint())
        return self._named(self.roles[role], f"role '{role}' points to model "
                                             f"'{self.roles[role]}'")

    def _named(self, name: str, tried: str) -> ModelSpec:
        spec = self.models.get(name)
        if spec is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelError(protocol.MODEL_MISSING,
                             f"Unknown model: {tried}, which the {self.where()} does not "
                             f"define (models: {known}).", self.fix_hint())
        return spec


def default_registry() -> Registry:
    models = {
        "sd15": ModelSpec("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd15",
                          "text_to_image"),
        "sdxl": ModelSpec("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl",
                          "text_to_image"),
        "marigold-intrinsics": ModelSpec("marigold-intrinsics", MARIGOLD_INTRINSICS_ID,
                                         "marigold", "intrinsics"),
        "marigold-normals": ModelSpec("marigold-normals", MARIGOLD_NORMALS_ID, "marigold",
                                      "normals"),
        "shap-e-img2img": ModelSpec("shap-e-img2img", SHAP_E_IMG2IMG_ID, "shap_e", "image_to_3d"),
    }
    roles = {"text_to_image": "sd15", "intrinsics": "marigold-intrinsics",
             "normals": "marigold-normals", "image_to_3d": "shap-e-img2img"}
    for role, repo in CONTROLNET_IDS.items():
        name = role.replace("_", "-")  # "controlnet-depth", "controlnet-depth-sdxl", ...
        family = "sdxl" if role.endswith("_sdxl") else "sd15"
        models[name] = ModelSpec(name, repo, family, "controlnet")
        roles[role] = name
    return Registry(path=None, models=models, roles=roles)


def controlnet_role(control: str, family: str) -> str:
    """The registry role of the ControlNet for ``control`` on a ``family`` base model.

    ``("depth", "sd15")`` -> ``"controlnet_depth"``, ``("depth", "sdxl")`` ->
    ``"controlnet_depth_sdxl"``. Whether the registry defines the role is :meth:`Registry.resolve`'s
    business (``controlnet_normal_sdxl`` is not in the built-in registry).
    """
    if control not in CONTROLS:
        raise ModelError(protocol.INVALID_PARAMS,
                         f"Unknown control '{control}' (known: {', '.join(CONTROLS)}).",
                         f"Use one of {', '.join(CONTROLS)}.")
    if family not in KIND_FAMILIES["controlnet"]:
        raise ModelError(protocol.MODEL_FAMILY,
                         f"There are no ControlNets for {FAMILY_NAMES.get(family, family)} models.",
                         "Use an SD 1.5 or SDXL model for ControlNet-guided rendering.")
    return f"controlnet_{control}" + ("_sdxl" if family == "sdxl" else "")


def load_registry(path: str | os.PathLike[str] | None = None) -> Registry:
    """Read a registry file (or a folder holding ``registry.json``).

    ``None`` reads ``$SCENE_DIFFUSION_MODELS`` when set, else returns the built-in registry.
    A file replaces the built-in registry; it does not extend it.
    """
    if path is None:
        env = os.environ.get(ENV_REGISTRY, "").strip()
        if not env:
            return default_registry()
        path = env
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / REGISTRY_FILE
    file = file.resolve()
    data = _read_json(file)
    return _parse_registry(data, file)


def _read_json(file: Path) -> Any:
    hint = f"Point {ENV_REGISTRY} at a registry JSON file or a folder holding {REGISTRY_FILE}."
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ModelError(protocol.MODEL_MISSING,
                         f"Cannot read model registry {file}: {exc.strerror or exc}", hint) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(protocol.MODEL_MISSING,
                         f"Model registry {file} is not valid JSON: {exc}",
                         f"Fix the JSON in {file}.") from None


def _parse_registry(data: Any, file: Path) -> Registry:
    def bad(why: str) -> ModelError:
        return ModelError(protocol.MODEL_MISSING, f"Model registry {file}: {why}",
                          f"Fix {file}; see `{MAKE_TINY}` for an example file.")

    if not isinstance(data, dict):
        raise bad("the top level must be a JSON object")
    if data.get("format", REGISTRY_FORMAT) != REGISTRY_FORMAT:
        raise bad(f"unsupported format {data.get('format')!r} (expected {REGISTRY_FORMAT})")
    models, roles = data.get("models", {}), data.get("roles", {})
    if not isinstance(models, dict) or not isinstance(roles, dict):
        raise bad('"models" and "roles" must be JSON objects')
    specs = {name: _parse_model(name, entry, file.parent, bad) for name, entry in models.items()}
    for role, target in roles.items():
        if not isinstance(target, str):
            raise bad(f"role '{role}' must name a model")
    return Registry(path=file, models=specs, roles=dict(roles))


def _parse_model(name: str, entry: Any, base: Path, bad: Any) -> ModelSpec:
    if not isinstance(entry, dict) or not isinstance(entry.get("source"), str):
        raise bad(f"model '{name}' needs an object with a \"source\" string")
    family = entry.get("family")
    if family not in FAMILIES:
        raise bad(f"model '{name}' has family {family!r}; expected one of {', '.join(FAMILIES)}")
    kind = entry.get("kind", "text_to_image")
    return ModelSpec(name=name, source=_resolve_source(entry["source"], base), family=family,
                     kind=str(kind), tiny=bool(entry.get("tiny", False)))


def _resolve_source(source: str, base: Path) -> str:
    """Repo ids stay as they are; folders become absolute, relative ones to the file's folder.

    A source is a folder when it is absolute, starts with ``.`` or ``~``, does not look like
    ``owner/name``, or exists relative to the registry file's folder.
    """
    expanded = Path(source).expanduser()
    if expanded.is_absolute():
        return str(expanded)
    if _REPO_ID.match(source) and not (base / source).exists():
        return source
    return str((base / source).resolve())


def is_local_source(spec: ModelSpec) -> bool:
    return not _REPO_ID.match(spec.source)


# --- locating and family ---------------------------------------------------------------


def locate(spec: ModelSpec) -> Path | None:
    """The local folder holding the model, or None when it is not on this machine."""
    if is_local_source(spec):
        folder = Path(spec.source).expanduser()
        return folder if folder.is_dir() else None
    return _cached_snapshot(spec.source)


def _cached_snapshot(repo_id: str) -> Path | None:
    from huggingface_hub import snapshot_download

    try:  # local_files_only: never touches the network, just resolves the cached snapshot
        folder = snapshot_download(repo_id, local_files_only=True)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError) or a malformed id
        return None
    return Path(folder) if isinstance(folder, str) and Path(folder).is_dir() else None


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


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
    raise ModelError(protocol.MODEL_MISSING,
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
        raise ModelError(protocol.MODEL_MISSING, f"Cannot read {file}: {exc}",
                         "The model folder looks damaged; download or rebuild it.") from None
    return data if isinstance(data, dict) else {}


def check_family(spec: ModelSpec, folder: Path) -> None:
    """Raise MODEL_FAMILY when the folder's model is not of ``spec.family`` (no weights read)."""
    found, cls = detect_family(Path(folder))
    want = FAMILY_NAMES.get(spec.family, spec.family)
    if found is None:
        raise ModelError(protocol.MODEL_FAMILY,
                         f"Model '{spec.name}' is declared {want}, but {folder} holds a "
                         f"{cls or 'model of unknown class'}, which is not a supported family "
                         f"({', '.join(FAMILY_NAMES.values())}).",
                         f"Choose a {want} model for '{spec.name}' in the registry.")
    if found != spec.family:
        raise ModelError(protocol.MODEL_FAMILY,
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
        raise ModelError(protocol.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a {spec.kind} model, which must be "
                         f"{_ARTICLES[families[0]]} {wanted} model, but it is declared "
                         f"{FAMILY_NAMES.get(spec.family, spec.family)}.",
                         f"Point '{spec.name}' at a {wanted} model in the registry, or give it "
                         "the kind that fits it.")
    _, cls = detect_family(Path(folder))
    if spec.kind == "controlnet" and cls != CONTROLNET_CLASS:
        raise ModelError(protocol.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a ControlNet, but {folder} holds a "
                         f"{cls or 'model of unknown class'}, not a {CONTROLNET_CLASS}.",
                         f"Point '{spec.name}' at a ControlNet (such as "
                         f"{CONTROLNET_IDS['controlnet_depth']}) in the registry.")
    if spec.kind != "controlnet" and cls == CONTROLNET_CLASS:
        raise ModelError(protocol.MODEL_FAMILY,
                         f"Model '{spec.name}' is used as a {spec.kind} model, but {folder} holds a "
                         f"{CONTROLNET_CLASS}, which only guides a text_to_image model.",
                         f"Give '{spec.name}' \"kind\": \"controlnet\" in the registry, or point it "
                         f"at a {spec.kind} model.")
    want_cls = PIPELINE_CLASSES.get(spec.kind)
    if want_cls is None:
        return
    if cls != want_cls:
        example = EXAMPLE_IDS[spec.kind]
        raise ModelError(protocol.MODEL_FAMILY,
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


# --- listing ---------------------------------------------------------------------------


def describe(registry: Registry) -> list[dict[str, Any]]:
    """One row per model for ``models list``."""
    rows = []
    for name, spec in registry.models.items():
        folder = locate(spec)
        rows.append({
            "roles": sorted(r for r, n in registry.roles.items() if n == name),
            "name": name,
            "family": spec.family,
            "kind": spec.kind,
            "source": spec.source,
            "local": str(folder) if folder else None,
            "tiny": spec.tiny,
        })
    return rows


def check(registry: Registry, allow_unsafe: bool = False) -> list[dict[str, Any]]:
    """One row per model for ``models check``: can it load offline, and if not, why."""
    rows = [_check_one(spec, allow_unsafe) for spec in registry.models.values()]
    for role, name in registry.roles.items():
        if name not in registry.models:
            rows.append({"name": name, "ok": False,
                         "detail": f"role '{role}' points to model '{name}', which is not "
                                   f"defined in the {registry.where()}"})
    return rows


def _check_one(spec: ModelSpec, allow_unsafe: bool) -> dict[str, Any]:
    folder = locate(spec)
    if folder is None:
        return {"name": spec.name, "ok": False, "detail": missing_detail(spec)}
    try:
        check_family(spec, folder)
        check_kind(spec, folder)
    except ModelError as exc:
        return {"name": spec.name, "ok": False, "detail": exc.message}
    problem = weights_problem(folder, allow_unsafe)
    return {"name": spec.name, "ok": problem is None, "detail": problem or f"ok: {folder}"}


def missing_detail(spec: ModelSpec) -> str:
    return f"missing locally: {_not_here(spec)}"


def _not_here(spec: ModelSpec) -> str:
    if is_local_source(spec):
        return f"folder {spec.source} does not exist"
    return f"{spec.source} is not in the Hugging Face cache ({hf_cache_dir()})"


# --- loading ---------------------------------------------------------------------------


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


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


def free_memory(device: str) -> None:
    gc.collect()  # pipelines hold reference cycles; collect before emptying device caches
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.startswith("mps") and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def _family_phrase(family: str) -> str:
    """'an SD 1.5 model', 'a Marigold model', 'a sd3 model' (unknown families as written)."""
    return f"{_ARTICLES.get(family, 'a')} {FAMILY_NAMES.get(family, family)} model"


@dataclass
class _Loaded:
    spec: ModelSpec
    pipeline: Any  # a diffusers pipeline, or a ControlNetModel (kind controlnet)


class PipelineCache:
    """Loaded pipelines (and ControlNets) kept warm between jobs, one family on the device at a time.

    Pipelines and ControlNet models are cached by model name. Loading a model of another family
    first releases every loaded model of a different family: SD 1.5, SDXL, Marigold and Shap-E
    never share the device, so a PBR job (Marigold) after a texture job (SD 1.5) reloads, and the
    reverse. The two Marigold models (intrinsics and normals) are one family and stay loaded
    together; so do an SD 1.5 base model and its SD 1.5 ControlNets.

    ControlNet pipelines are not cached: :meth:`controlnet_pipeline` wires the cached base
    pipeline's components and the cached ControlNets into a new pipeline object on every call
    (object wiring only, no weights copied), so nothing but the models themselves holds memory
    and :meth:`release` needs no second list to clear.
    """

    def __init__(self, device: str, dtype: torch.dtype, allow_download: bool = False,
                 allow_unsafe: bool = False) -> None:
        self.device = device
        self.dtype = dtype
        self.allow_download = allow_download
        self.allow_unsafe = allow_unsafe
        self._loaded: dict[str, _Loaded] = {}

    def text_to_image(self, spec: ModelSpec) -> Any:
        """A StableDiffusionPipeline or StableDiffusionXLPipeline, by ``spec.family``."""
        if spec.kind != "text_to_image":
            raise ModelError(protocol.INVALID_PARAMS,
                             f"Model '{spec.name}' is a {spec.kind} model, not text_to_image.",
                             "Choose a text_to_image model for this role in the registry.")
        return self._get(spec)

    def marigold(self, spec: ModelSpec) -> Any:
        """A MarigoldIntrinsicsPipeline (kind ``intrinsics``) or MarigoldNormalsPipeline (``normals``).

        Same rules as :meth:`text_to_image`: offline first, safetensors only, the family and the
        pipeline class checked before any weights load, one pipeline per model name kept warm.
        """
        if spec.kind not in MARIGOLD_PIPELINES:
            raise ModelError(protocol.INVALID_PARAMS,
                             f"Model '{spec.name}' is a {spec.kind} model, not a Marigold "
                             f"{' or '.join(MARIGOLD_PIPELINES)} model.",
                             "Choose an intrinsics or normals model (a Marigold pipeline) for "
                             "this role in the registry.")
        return self._get(spec)

    def image_to_3d(self, spec: ModelSpec) -> Any:
        """A ShapEImg2ImgPipeline (kind ``image_to_3d``, family ``shap_e``).

        Same rules as :meth:`marigold`: offline first, safetensors only, the family and the pipeline
        class checked before any weights load, kept warm by model name, and loading it releases the
        models of every other family (a Shap-E job after a texture job unloads SD 1.5).
        """
        if spec.kind != "image_to_3d":
            raise ModelError(protocol.INVALID_PARAMS,
                             f"Model '{spec.name}' is a {spec.kind} model, not an image_to_3d model.",
                             f"Choose an image_to_3d model (a Shap-E image-to-3D pipeline such as "
                             f"{SHAP_E_IMG2IMG_ID}) for this role in the registry.")
        return self._get(spec)

    def controlnet_pipeline(self, base: ModelSpec, controls: list[ModelSpec], img2img: bool = False,
                            inpaint: bool = False) -> Any:
        """The ControlNet pipeline of ``base`` (a text_to_image model) guided by ``controls``.

        SD 1.5: ``StableDiffusionControlNetPipeline`` (``img2img``:
        ``StableDiffusionControlNetImg2ImgPipeline``, ``inpaint``: ``StableDiffusionControlNetInpaintPipeline``);
        SDXL: ``StableDiffusionXLControlNetPipeline`` (``StableDiffusionXLControlNetImg2ImgPipeline``,
        ``StableDiffusionXLControlNetInpaintPipeline``). The inpaint pipelines take ``image`` (the start
        image), ``mask_image`` (white: repaint) and ``control_image``. With the 4-channel UNet of an ordinary
        text-to-image model (diffusers 0.42, checked in its source) they re-noise the start image's latents to
        each step's noise level and blend them in outside the mask after every step, ending on the clean
        latents there; a 9-channel inpainting UNet gets the mask and masked-image latents as extra input
        channels instead. Either way pixels outside the mask come back through the VAE, close to but not
        equal to the start image: paste them back where they must match exactly. With one control the pipeline's
        ``controlnet`` is that ControlNetModel (a call takes one control image and float scale,
        start and end); with several a ``MultiControlNetModel`` of them in the order given (a call
        takes lists of those, one entry per control, in the same order).

        Every control must be a ``controlnet`` model of the base's family, by its registry entry
        and by its folder's config: all of that is checked before any weights load (a mismatch is
        MODEL_FAMILY, a wrong kind INVALID_PARAMS, a missing model MODEL_MISSING). The base
        pipeline is the one :meth:`text_to_image` returns, so its UNet, VAE and text encoders are
        shared, not copied; the ControlNet pipeline gets its own scheduler (schedulers hold
        per-run state) of the base scheduler's class and config.
        """
        if base.kind != "text_to_image":
            raise ModelError(protocol.INVALID_PARAMS,
                             f"Model '{base.name}' is a {base.kind} model; a ControlNet guides a "
                             "text_to_image model.",
                             "Choose a text_to_image model (SD 1.5 or SDXL) as the base model.")
        if not controls:
            raise ModelError(protocol.INVALID_PARAMS,
                             f"No ControlNet given for the ControlNet pipeline of '{base.name}'.",
                             "Enable at least one control (depth, normal or canny).")
        for control in controls:
            if control.kind != "controlnet":
                raise ModelError(protocol.INVALID_PARAMS,
                                 f"Model '{control.name}' is a {control.kind} model, not a "
                                 "controlnet.",
                                 f"Give '{control.name}' \"kind\": \"controlnet\" in the "
                                 "registry, or choose a ControlNet for this control.")
            if control.family != base.family:
                raise self._family_clash(
                    base, control, f"ControlNet '{control.name}' is {_family_phrase(control.family)} "
                                   f"and cannot guide '{base.name}', {_family_phrase(base.family)}: a "
                                   "ControlNet must be of its base model's family.")
        # Locate and check every folder (JSON configs only) before any weights load or free.
        sources = {}
        for spec in (base, *controls):
            if self._cached(spec) is not None or spec.name in sources:
                continue
            try:
                sources[spec.name] = self._source(spec)
            except ModelError as exc:
                if spec is base or exc.code != protocol.MODEL_FAMILY:
                    raise
                raise self._family_clash(
                    base, spec, f"ControlNet '{spec.name}' cannot guide '{base.name}' "
                                f"({_family_phrase(base.family)}): {exc.message}", exc.hint) from None
        base_pipe = self._get(base, sources.get(base.name))
        nets = [self._get(control, sources.get(control.name)) for control in controls]
        return self._assemble(base_pipe, nets, base.family, img2img, inpaint)

    def _family_clash(self, base: ModelSpec, control: ModelSpec, message: str, hint: str = "") -> ModelError:
        """MODEL_FAMILY for a ControlNet that cannot guide ``base``; the hint names the right roles."""
        roles = ", ".join(controlnet_role(c, base.family) for c in CONTROLS)
        advice = (f"use {_ARTICLES.get(base.family, 'a')} {FAMILY_NAMES.get(base.family, base.family)} "
                  f"ControlNet with '{base.name}' (roles {roles})")
        if hint:
            return ModelError(protocol.MODEL_FAMILY, message, f"{hint} Otherwise {advice}.")
        return ModelError(protocol.MODEL_FAMILY, message,
                          f"{advice[:1].upper()}{advice[1:]}, or a base model of the family of "
                          f"'{control.name}'.")

    def _assemble(self, base_pipe: Any, nets: list[Any], family: str, img2img: bool, inpaint: bool = False) -> Any:
        import inspect

        from diffusers import MultiControlNetModel

        cls = controlnet_pipeline_class(family, img2img, inpaint)
        params = inspect.signature(cls.__init__).parameters
        # vae, text encoders, tokenizers, unet (+ safety_checker, feature_extractor, image_encoder)
        parts = {k: v for k, v in base_pipe.components.items() if k in params}
        scheduler = base_pipe.scheduler
        parts["scheduler"] = type(scheduler).from_config(scheduler.config)
        # Constructor flags the base pipeline keeps in its config (SD: requires_safety_checker;
        # SDXL: force_zeros_for_empty_prompt) or as an attribute (SDXL's invisible watermark).
        options = {k: base_pipe.config[k] for k in ("requires_safety_checker", "force_zeros_for_empty_prompt")
                   if k in params and k in base_pipe.config}
        if "add_watermarker" in params:
            options["add_watermarker"] = getattr(base_pipe, "watermark", None) is not None
        controlnet = nets[0] if len(nets) == 1 else MultiControlNetModel(nets)
        pipeline = cls(**parts, controlnet=controlnet, **options)
        pipeline.set_progress_bar_config(disable=True)
        return pipeline

    def _cached(self, spec: ModelSpec) -> Any:
        hit = self._loaded.get(spec.name)
        return hit.pipeline if hit is not None and hit.spec == spec else None

    def _get(self, spec: ModelSpec, source: tuple[str, bool] | None = None) -> Any:
        """The cached model, else loaded (``source``: what :meth:`_source` gave, when known)."""
        hit = self._cached(spec)
        if hit is not None:
            return hit
        # locate + family check: cheap, before any freeing
        path, local = source if source is not None else self._source(spec)
        self._drop(lambda s: s.family != spec.family or s.name == spec.name)
        pipeline = self._from_pretrained(spec, path, local)
        self._loaded[spec.name] = _Loaded(spec, pipeline)
        return pipeline

    def loaded(self) -> list[str]:
        """Names of the loaded models: pipelines and ControlNets, in loading order."""
        return list(self._loaded)

    def release(self) -> None:
        self._drop(lambda s: True)

    def _drop(self, which: Callable[[ModelSpec], bool]) -> None:
        names = [n for n, item in self._loaded.items() if which(item.spec)]
        for name in names:
            del self._loaded[name]
        if names:
            free_memory(self.device)

    def _source(self, spec: ModelSpec) -> tuple[str, bool]:
        """(what to hand from_pretrained, whether it is local), family already checked."""
        folder = locate(spec)
        if folder is not None:
            check_family(spec, folder)
            check_kind(spec, folder)
            return str(folder), True
        if is_local_source(spec) or not self.allow_download or hub_offline():
            raise ModelError(protocol.MODEL_MISSING,
                             f"Model '{spec.name}' is not available: {_not_here(spec)}"
                             f"{self._why_no_download(spec)}.", self._missing_hint(spec))
        index = self._download_index(spec)
        check_family(spec, index)
        check_kind(spec, index)
        return spec.source, False

    def _why_no_download(self, spec: ModelSpec) -> str:
        if is_local_source(spec):
            return ""
        if not self.allow_download:
            return ", and downloads are turned off"
        return ", and HF_HUB_OFFLINE is set"

    def _missing_hint(self, spec: ModelSpec) -> str:
        if is_local_source(spec):
            return (f"Create the folder {spec.source} (a diffusers save_pretrained folder), "
                    f"fix the source of '{spec.name}' in the registry, or run `{MAKE_TINY}`.")
        return (f"Download it once with `hf download {spec.source}`, allow downloads in the "
                f"add-on preferences, point '{spec.name}' at a local folder in the registry "
                f"(or set {ENV_REGISTRY}), or run `{MAKE_TINY}` for small test models.")

    def _load_hint(self, problem: str | None) -> str:
        if problem and problem.startswith("no safetensors"):
            return ("Re-save the model with save_pretrained(..., safe_serialization=True), or turn on "
                    "Allow Pickle Weights in the add-on preferences (--allow-unsafe on the command line).")
        return "The model files look incomplete or damaged: download or rebuild them."

    def _download_index(self, spec: ModelSpec) -> Path:
        """Fetch only model_index.json (a ControlNet: config.json) so the family is checked
        before weights download."""
        from huggingface_hub import hf_hub_download

        index = "config.json" if spec.kind == "controlnet" else "model_index.json"
        try:
            return Path(hf_hub_download(spec.source, index)).parent
        except Exception as exc:  # network, auth, missing repo: all mean "cannot get it"
            raise ModelError(protocol.MODEL_MISSING,
                             f"Cannot download {spec.source} for model '{spec.name}': {exc}",
                             self._missing_hint(spec)) from None

    def _from_pretrained(self, spec: ModelSpec, source: str, local: bool) -> Any:
        cls = pipeline_class(spec.family, spec.kind)
        try:
            pipeline = cls.from_pretrained(
                source,
                dtype=self.dtype,  # diffusers 0.42 deprecates torch_dtype for dtype
                use_safetensors=None if self.allow_unsafe else True,
                local_files_only=local,
            )
        except (OSError, ValueError) as exc:  # missing / incomplete files, pickle-only weights
            problem = weights_problem(Path(source), self.allow_unsafe) if local else None
            raise ModelError(protocol.MODEL_MISSING,
                             f"Cannot load model '{spec.name}' from {source}: {problem or exc}",
                             self._load_hint(problem)) from None
        pipeline = pipeline.to(self.device)
        if hasattr(pipeline, "set_progress_bar_config"):  # a pipeline, not a ControlNetModel
            pipeline.set_progress_bar_config(disable=True)
        return pipeline
