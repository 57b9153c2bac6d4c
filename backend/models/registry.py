"""The model registry: roles -> named models, read from a JSON file or built in; locating and listing.

A registry maps roles (``text_to_image``, ``intrinsics``, ``normals``, the ControlNets
``controlnet_depth`` ..., ``image_to_3d``) to named models (:class:`ModelSpec`); a model's source is
a Hugging Face repo id or a local diffusers folder. :func:`locate` finds the local folder (an
existing folder, or the cached hub snapshot, never touching the network); :func:`describe` and
:func:`check` are the rows of ``models list`` and ``models check``. huggingface_hub is imported
inside functions.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.models.checkpoint import checkpoint_row
from backend.models.errors import ModelError
from backend.models.families import (
    CONTROLNET_IDS,
    FAMILIES,
    FAMILY_NAMES,
    IP_ADAPTER_ID,
    MARIGOLD_INTRINSICS_ID,
    MARIGOLD_NORMALS_ID,
    SHAP_E_IMG2IMG_ID,
    ModelSpec,
    check_components,
    check_family,
    check_kind,
    controlnet_role,
    weights_problem,
)
from backend.models.family_traits import TRAITS, parse_control_modes
from contract import messages
from contract.model_sources import is_checkpoint_file, is_repo_id, resolve_source

REGISTRY_FORMAT = 1
REGISTRY_FILE = "registry.json"
ENV_REGISTRY = "SCENE_DIFFUSION_MODELS"
MAKE_TINY = "python -m backend models make-tiny DIR"

# "owner/name": what a Hugging Face repo id looks like (anything else is a folder).


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
            raise ModelError(messages.MODEL_MISSING,
                             f"No model for role '{role}' in the {self.where()} "
                             f"(roles defined: {known}).", self.fix_hint())
        return self._named(self.roles[role], f"role '{role}' points to model "
                                             f"'{self.roles[role]}'")

    def control(self, control: str, family: str, name: str | None = None) -> ModelSpec:
        """The control model for ``control`` (depth, normal, canny) on a ``family`` base model; an explicit
        model ``name`` overrides the role. A family with no control model of that kind is MODEL_MISSING, before
        anything loads, naming the kinds it has (a family with no control models at all: MODEL_FAMILY)."""
        role = controlnet_role(control, family)
        if name is not None or role in self.roles:
            return self.resolve(role, name)
        have = sorted(c for c in ("depth", "normal", "canny") if controlnet_role(c, family) in self.roles)
        label = FAMILY_NAMES.get(family, family)
        raise ModelError(messages.MODEL_MISSING,
                         f"There is no {control} control model for {label} in the {self.where()} "
                         f"(role '{role}'; {label} controls here: {', '.join(have) or 'none'}).",
                         f"Turn the {control} control off{' and use ' + ' or '.join(have) if have else ''}, or add "
                         f"a {label} {control} ControlNet as role '{role}' in a registry file ({ENV_REGISTRY}).")

    def _named(self, name: str, tried: str) -> ModelSpec:
        spec = self.models.get(name)
        if spec is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise ModelError(messages.MODEL_MISSING,
                             f"Unknown model: {tried}, which the {self.where()} does not "
                             f"define (models: {known}).", self.fix_hint())
        return spec


def default_registry() -> Registry:
    models = {
        "sd15": ModelSpec("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd15",
                          "text_to_image", licence="creativeml-openrail-m"),
        "sdxl": ModelSpec("sdxl", "stabilityai/stable-diffusion-xl-base-1.0", "sdxl",
                          "text_to_image", licence="openrail++"),
        "marigold-intrinsics": ModelSpec("marigold-intrinsics", MARIGOLD_INTRINSICS_ID,
                                         "marigold", "intrinsics"),
        "marigold-normals": ModelSpec("marigold-normals", MARIGOLD_NORMALS_ID, "marigold",
                                      "normals"),
        "shap-e-img2img": ModelSpec("shap-e-img2img", SHAP_E_IMG2IMG_ID, "shap_e", "image_to_3d", licence="mit"),
        # h94/IP-Adapter's README states Apache-2.0; each family's adapter sits beside its CLIP image encoder.
        "ip-adapter-sd15": ModelSpec("ip-adapter-sd15", IP_ADAPTER_ID, "sd15", "ip_adapter", licence="apache-2.0",
                                     weight_name="models/ip-adapter_sd15.safetensors",
                                     image_encoder="models/image_encoder"),
        "ip-adapter-sdxl": ModelSpec("ip-adapter-sdxl", IP_ADAPTER_ID, "sdxl", "ip_adapter", licence="apache-2.0",
                                     weight_name="sdxl_models/ip-adapter_sdxl.safetensors",
                                     image_encoder="sdxl_models/image_encoder"),
    }
    roles = {"text_to_image": "sd15", "intrinsics": "marigold-intrinsics",
             "normals": "marigold-normals", "image_to_3d": "shap-e-img2img",
             "ip_adapter": "ip-adapter-sd15", "ip_adapter_sdxl": "ip-adapter-sdxl"}
    models.update({spec.name: spec for spec in _TRANSFORMER_MODELS})
    by_repo: dict[str, list[str]] = {}
    for role, repo in CONTROLNET_IDS.items():
        by_repo.setdefault(repo, []).append(role)
    for repo, control_roles in by_repo.items():
        family = next(f for f, t in TRAITS.items() if repo in t.control_ids.values())
        # One model per repository: a union ControlNet serves several roles and loads once.
        name = (control_roles[0].replace("_", "-") if len(control_roles) == 1
                else f"controlnet-union-{family.replace('_', '-')}")
        models[name] = ModelSpec(name, repo, family, "controlnet", licence=TRAITS[family].control_licence,
                                 control_modes=UNION_CONTROL_MODES.get(repo, ""))
        roles.update({role: name for role in control_roles})
    return Registry(path=None, models=models, roles=roles)


# The transformer families' text-to-image models, by their Hugging Face ids and stated licences.
_TRANSFORMER_MODELS = (
    ModelSpec("flux-schnell", "black-forest-labs/FLUX.1-schnell", "flux", "text_to_image", licence="apache-2.0"),
    ModelSpec("flux-dev", "black-forest-labs/FLUX.1-dev", "flux", "text_to_image",
              licence="flux-1-dev-non-commercial-license"),
    ModelSpec("flux2-klein", "black-forest-labs/FLUX.2-klein-4B", "flux2_klein", "text_to_image",
              licence="apache-2.0"),
    ModelSpec("qwen-image", "Qwen/Qwen-Image", "qwen_image", "text_to_image", licence="apache-2.0"),
    ModelSpec("z-image-turbo", "Tongyi-MAI/Z-Image-Turbo", "z_image", "text_to_image", licence="apache-2.0"),
    ModelSpec("sd35-large", "stabilityai/stable-diffusion-3.5-large", "sd3", "text_to_image",
              licence="stabilityai-ai-community"),
    ModelSpec("sd35-medium", "stabilityai/stable-diffusion-3.5-medium", "sd3", "text_to_image",
              licence="stabilityai-ai-community"),
)
# Union ControlNets whose pipeline takes the control kind as a mode number (the model card's table).
UNION_CONTROL_MODES = {"InstantX/FLUX.1-dev-Controlnet-Union": "canny=0,depth=2"}


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
        raise ModelError(messages.MODEL_MISSING,
                         f"Cannot read model registry {file}: {exc.strerror or exc}", hint) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(messages.MODEL_MISSING,
                         f"Model registry {file} is not valid JSON: {exc}",
                         f"Fix the JSON in {file}.") from None


def _parse_registry(data: Any, file: Path) -> Registry:
    def bad(why: str) -> ModelError:
        return ModelError(messages.MODEL_MISSING, f"Model registry {file}: {why}",
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
    optional = {}
    for key in _OPTIONAL_STRINGS:
        value = entry.get(key, "")
        if not isinstance(value, str):
            raise bad(f"model '{name}': \"{key}\" must be a string")
        optional[key] = value
    if optional["config"]:  # a checkpoint's config folder: resolved like sources (a repo id stays as it is)
        optional["config"] = resolve_source(optional["config"], base)
    if optional["quantization"] not in ("", "gguf", "bnb_4bit"):
        raise bad(f"model '{name}': \"quantization\" must be \"gguf\" or \"bnb_4bit\", "
                  f"got {optional['quantization']!r}")
    try:
        parse_control_modes(optional["control_modes"])
    except ValueError as exc:
        raise bad(f"model '{name}': {exc}") from None
    if optional["transformer_file"]:  # a GGUF transformer beside the pipeline folder: relative to the registry
        optional["transformer_file"] = resolve_source(optional["transformer_file"], base)
    return ModelSpec(name=name, source=resolve_source(entry["source"], base), family=family,
                     kind=str(kind), tiny=bool(entry.get("tiny", False)), **optional)


# Registry entry fields beyond source/family/kind/tiny (see ModelSpec).
_OPTIONAL_STRINGS = ("config", "licence", "weight_name", "image_encoder", "quantization", "transformer_file",
                     "control_modes")


def is_local_source(spec: ModelSpec) -> bool:
    return not is_repo_id(spec.source)


# --- locating --------------------------------------------------------------------------


def locate(spec: ModelSpec) -> Path | None:
    """The local folder holding the model (a checkpoint: the file), or None when it is not on this machine."""
    if is_local_source(spec):
        folder = Path(spec.source).expanduser()
        if is_checkpoint_file(spec.source):
            return folder if folder.is_file() else None
        return folder if folder.is_dir() else None
    return cached_snapshot(spec.source)


def cached_snapshot(repo_id: str) -> Path | None:
    """The Hugging Face cache's snapshot folder of ``repo_id``, or None when it is not cached."""
    from huggingface_hub import snapshot_download

    try:  # local_files_only: never touches the network, just resolves the cached snapshot
        folder = snapshot_download(repo_id, local_files_only=True)
    except (OSError, ValueError):  # not cached (LocalEntryNotFoundError) or a malformed id
        return None
    return Path(folder) if isinstance(folder, str) and Path(folder).is_dir() else None


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


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
    if is_checkpoint_file(spec.source):
        return checkpoint_row(spec, folder, allow_unsafe)
    if spec.kind == "ip_adapter":  # a weights file beside a CLIP image encoder, not a diffusers pipeline folder
        from backend.models.ip_adapter import check_ip_adapter  # imports this module

        try:
            layout = check_ip_adapter(spec, folder, allow_unsafe=allow_unsafe)
        except ModelError as exc:
            return {"name": spec.name, "ok": False, "detail": exc.message}
        return {"name": spec.name, "ok": True, "detail": f"ok: {layout.weights}"}
    try:
        check_family(spec, folder)
        check_kind(spec, folder)
        check_components(spec, folder)
    except ModelError as exc:
        return {"name": spec.name, "ok": False, "detail": exc.message}
    problem = weights_problem(folder, allow_unsafe)
    return {"name": spec.name, "ok": problem is None, "detail": problem or f"ok: {folder}"}


def missing_detail(spec: ModelSpec) -> str:
    return f"missing locally: {_not_here(spec)}"


def _not_here(spec: ModelSpec) -> str:
    if is_local_source(spec):
        return f"{'file' if is_checkpoint_file(spec.source) else 'folder'} {spec.source} does not exist"
    return f"{spec.source} is not in the Hugging Face cache ({hf_cache_dir()})"
