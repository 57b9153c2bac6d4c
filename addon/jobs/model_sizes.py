"""Which models the panels will use and how big they are on disk, read without the backend.

No bpy, no huggingface_hub: the registry file is plain JSON and the Hugging Face cache is a folder
layout (``models--org--name/blobs`` holding the files, ``snapshots/<revision>`` linking to them).
The built-in registry is mirrored here because the add-on never imports backend/; a unit test keeps
the two equal. Sizes to download are unknown offline, so a missing model says "to download".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ...contract.model_sources import is_repo_id, resolve_source

REGISTRY_FILE = "registry.json"

# role -> (model name, source, family): backend/models/registry.py's default_registry().
BUILTIN: dict[str, tuple[str, str, str]] = {
    "text_to_image": ("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd15"),
    "intrinsics": ("marigold-intrinsics", "prs-eth/marigold-iid-appearance-v1-1", "marigold"),
    "normals": ("marigold-normals", "prs-eth/marigold-normals-v1-1", "marigold"),
    "image_to_3d": ("shap-e-img2img", "openai/shap-e-img2img", "shap_e"),
    "controlnet_depth": ("controlnet-depth", "lllyasviel/control_v11f1p_sd15_depth", "sd15"),
    "controlnet_normal": ("controlnet-normal", "lllyasviel/control_v11p_sd15_normalbae", "sd15"),
    "controlnet_canny": ("controlnet-canny", "lllyasviel/control_v11p_sd15_canny", "sd15"),
    "controlnet_depth_sdxl": ("controlnet-depth-sdxl", "diffusers/controlnet-depth-sdxl-1.0", "sdxl"),
    "controlnet_canny_sdxl": ("controlnet-canny-sdxl", "diffusers/controlnet-canny-sdxl-1.0", "sdxl"),
    "controlnet_depth_flux": ("controlnet-union-flux", "InstantX/FLUX.1-dev-Controlnet-Union", "flux"),
    "controlnet_canny_flux": ("controlnet-union-flux", "InstantX/FLUX.1-dev-Controlnet-Union", "flux"),
    "controlnet_normal_flux": ("controlnet-normal-flux", "jasperai/Flux.1-dev-Controlnet-Surface-Normals", "flux"),
    "controlnet_depth_qwen_image": ("controlnet-union-qwen-image", "InstantX/Qwen-Image-ControlNet-Union",
                                    "qwen_image"),
    "controlnet_canny_qwen_image": ("controlnet-union-qwen-image", "InstantX/Qwen-Image-ControlNet-Union",
                                    "qwen_image"),
    "controlnet_depth_z_image": ("controlnet-union-z-image", "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union",
                                 "z_image"),
    "controlnet_canny_z_image": ("controlnet-union-z-image", "alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union",
                                 "z_image"),
    "controlnet_depth_sd3": ("controlnet-depth-sd3", "stabilityai/stable-diffusion-3.5-large-controlnet-depth", "sd3"),
    "controlnet_canny_sd3": ("controlnet-canny-sd3", "stabilityai/stable-diffusion-3.5-large-controlnet-canny", "sd3"),
    "ip_adapter": ("ip-adapter-sd15", "h94/IP-Adapter", "sd15"),
    "ip_adapter_sdxl": ("ip-adapter-sdxl", "h94/IP-Adapter", "sdxl"),
}
CONTROLS = ("depth", "normal", "canny")
ON_DISK, TO_DOWNLOAD, PARTIAL, NO_FOLDER, UNDEFINED = "on disk", "to download", "partly downloaded", "no folder", \
    "not in the registry"


@dataclass(frozen=True)
class RoleModel:
    role: str
    name: str  # registry model name ("" when the role is not defined)
    source: str  # a Hugging Face repo id or a local folder
    status: str  # ON_DISK, TO_DOWNLOAD, PARTIAL, NO_FOLDER or UNDEFINED
    size: int = 0  # bytes on disk (ON_DISK, PARTIAL)


@dataclass(frozen=True)
class ModelsReport:
    models: list[RoleModel]
    registry: str  # "built-in registry" or the file read
    problem: str = ""  # a registry that could not be read

    @property
    def on_disk(self) -> int:
        """Bytes on disk, each model counted once even when several roles share it."""
        seen: dict[str, int] = {m.source: m.size for m in self.models if m.status in (ON_DISK, PARTIAL)}
        return sum(seen.values())

    @property
    def missing(self) -> int:
        """Models (by source) still to download or only partly there; undefined roles are not counted."""
        return len({m.source for m in self.models if m.status in (TO_DOWNLOAD, PARTIAL, NO_FOLDER)})


def hub_cache(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Where huggingface_hub keeps repos, by its own environment variables and defaults."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(name):
            return Path(environ[name]).expanduser()
    if environ.get("HF_HOME"):
        return Path(environ["HF_HOME"]).expanduser() / "hub"
    base = Path(environ["XDG_CACHE_HOME"]).expanduser() if environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def folder_size(folder: Path) -> tuple[int, bool]:
    """Bytes of the regular files under ``folder`` (links not followed, so a cached repo's snapshots do not
    count its blobs twice), and whether an unfinished download (``*.incomplete``) is among them."""
    total, incomplete = 0, False
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.endswith(".incomplete"):
                incomplete = True
                continue
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, name)):
                total += info.st_size
    return total, incomplete


def cached_repo(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def is_local(source: str) -> bool:
    return not is_repo_id(source)


def measure(role: str, name: str, source: str, cache: Path) -> RoleModel:
    if is_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            return RoleModel(role, name, source, NO_FOLDER)
        return RoleModel(role, name, source, ON_DISK, folder_size(folder)[0])
    repo = cached_repo(cache, source)
    if not repo.is_dir():
        return RoleModel(role, name, source, TO_DOWNLOAD)
    size, incomplete = folder_size(repo)
    snapshots = repo / "snapshots"
    complete = snapshots.is_dir() and any(snapshots.iterdir()) and not incomplete
    return RoleModel(role, name, source, ON_DISK if complete else PARTIAL, size)


def read_registry(path: str | None) -> tuple[dict[str, tuple[str, str, str]], str]:
    """role -> (name, source, family) from a registry file or folder (None: the built-in one), and its name.
    OSError / ValueError for a file that cannot be read."""
    if not path:
        return dict(BUILTIN), "built-in registry"
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / REGISTRY_FILE
    data = json.loads(file.read_text(encoding="utf-8"))
    models, roles = data.get("models", {}), data.get("roles", {})
    if not isinstance(models, dict) or not isinstance(roles, dict):
        raise ValueError('"models" and "roles" must be JSON objects')
    table = {}
    for role, name in roles.items():
        entry = models.get(name)
        if isinstance(entry, dict) and isinstance(entry.get("source"), str):
            table[role] = (str(name), resolve_source(entry["source"], file.parent), str(entry.get("family", "")))
    return table, str(file)


def panel_roles(base_family: str) -> list[str]:
    """The roles the panels' jobs resolve: the base model, its family's ControlNets, PBR and mesh models."""
    suffix = "" if base_family in ("sd15", "") else f"_{base_family}"  # controlnet_depth, controlnet_depth_flux
    return ["text_to_image", *(f"controlnet_{c}{suffix}" for c in CONTROLS), "intrinsics", "normals", "image_to_3d"]


def report(registry_path: str | None, cache: Path | None = None) -> ModelsReport:
    cache = cache if cache is not None else hub_cache()
    try:
        table, where = read_registry(registry_path)
    except (OSError, ValueError) as exc:
        return ModelsReport([], str(registry_path), f"cannot read the model registry: {exc}")
    base_family = table.get("text_to_image", ("", "", "sd15"))[2]
    rows = []
    for role in panel_roles(base_family):
        if role not in table:
            rows.append(RoleModel(role, "", "", UNDEFINED))
            continue
        name, source, _family = table[role]
        rows.append(measure(role, name, source, cache))
    return ModelsReport(rows, where)


def human_size(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def describe(model: RoleModel) -> str:
    """One short line: "text_to_image: sd15, 5.1 GB" or "controlnet_depth: controlnet-depth, to download"."""
    if model.status == UNDEFINED:
        return f"{model.role}: {UNDEFINED}"
    if model.status in (ON_DISK, PARTIAL):
        extra = "" if model.status == ON_DISK else f" ({PARTIAL})"
        return f"{model.role}: {model.name}, {human_size(model.size)}{extra}"
    return f"{model.role}: {model.name}, {model.status}"
