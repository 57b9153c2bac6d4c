"""Tiny random-weight pipelines built with the real diffusers / transformers classes.

``python -m devtools.tiny_models DIR`` and ``python -m backend models make-tiny DIR`` (from the
repository checkout: devtools/ is not shipped in the extension zip) call :func:`make_tiny`. Tests
and the offline demo then load the result through the same registry and ``from_pretrained`` path as
real weights, so nothing ever downloads from a hub. Shapes follow the real models where the
pipelines depend on them (VAE scale factor 8, 4 latent channels, 77-token prompts, SDXL's
text-time conditioning, Marigold's image + target latents stacked on the UNet's channels, a
ControlNet's encoder copied from its base model's UNet, Shap-E's latent sized to its renderer's
MLP); widths and depths are as small as the classes allow. The Shap-E renderer is also fit, briefly
and deterministically, so that every latent decodes to a closed, coloured, roughly spherical surface
(random weights decode to no surface at all): see :func:`shape_shap_e_renderer`.

Modules: :mod:`.tokenizer` (the CLIP tokenizer), :mod:`.diffusion` (SD 1.5, SDXL, Marigold and
ControlNet builders), :mod:`.shap_e` (the Shap-E builder, its marching-cubes table and renderer
shaping); this package holds the folder names, the registry document and :func:`make_tiny`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from devtools.tiny_models import ip_adapter, lora, single_file, transformer_families
from devtools.tiny_models.diffusion import (
    APPEARANCE_TARGETS,
    CONTROLNET_EMBEDDING_GAIN,
    CONTROLNET_OUT_SCALE,
    LATENT_CHANNELS,
    MARIGOLD_RESOLUTION,
    MARIGOLD_STEPS,
    SIZES,
    TinySizes,
    _controlnet_builder,
    build_controlnet,
    build_marigold_intrinsics,
    build_marigold_normals,
    build_sd15,
    build_sdxl,
)
from devtools.tiny_models.shap_e import (
    POSENC_FEATURES,
    POSENC_OCTAVES,
    SHAP_E_FIT_LR,
    SHAP_E_FIT_POINTS,
    SHAP_E_FIT_STEPS,
    SHAP_E_LATENT_GAIN,
    SHAP_E_LOW_OCTAVES,
    SHAP_E_PARAM_NAMES,
    SHAP_E_RADIUS,
    SHAP_E_SIZES,
    TinyShapESizes,
    build_shap_e_img2img,
    marching_cubes_table,
    shape_shap_e_renderer,
)
from devtools.tiny_models.tokenizer import (
    BOS,
    EOS,
    LOAD_KWARGS,
    MAX_TOKENS,
    MERGES,
    tokenizer_vocab,
    write_tokenizer_files,
)

__all__ = [
    # this package
    "REGISTRY_FORMAT", "SD15_DIR", "SDXL_DIR", "INTRINSICS_DIR", "NORMALS_DIR", "SHAP_E_DIR", "CONTROLNETS",
    "BUILDERS", "EXTRAS", "factory_digest", "registry_document", "make_tiny", "tiny_folder",
    # tokenizer
    "BOS", "EOS", "LOAD_KWARGS", "MAX_TOKENS", "MERGES", "tokenizer_vocab", "write_tokenizer_files",
    # diffusion
    "APPEARANCE_TARGETS", "CONTROLNET_EMBEDDING_GAIN", "CONTROLNET_OUT_SCALE", "LATENT_CHANNELS",
    "MARIGOLD_RESOLUTION", "MARIGOLD_STEPS", "SIZES", "TinySizes", "build_controlnet",
    "build_marigold_intrinsics", "build_marigold_normals", "build_sd15", "build_sdxl",
    # shap_e
    "POSENC_FEATURES", "POSENC_OCTAVES", "SHAP_E_FIT_LR", "SHAP_E_FIT_POINTS", "SHAP_E_FIT_STEPS",
    "SHAP_E_LATENT_GAIN", "SHAP_E_LOW_OCTAVES", "SHAP_E_PARAM_NAMES", "SHAP_E_RADIUS", "SHAP_E_SIZES",
    "TinyShapESizes", "build_shap_e_img2img", "marching_cubes_table", "shape_shap_e_renderer",
]

REGISTRY_FORMAT = 1
SD15_DIR = "sd15-tiny"
SDXL_DIR = "sdxl-tiny"
INTRINSICS_DIR = "marigold-intrinsics-tiny"
NORMALS_DIR = "marigold-normals-tiny"
SHAP_E_DIR = "shap-e-img2img-tiny"

# Files made from the saved pipelines (single-file checkpoints, LoRAs, IP-Adapters): each module writes its own
# and names its registry entries.
EXTRAS = (single_file, lora, ip_adapter)

# ControlNets: registry role -> (folder, family). Their UNet-side weights are copied from the tiny
# SD 1.5 / SDXL UNet, so each matches the base pipeline of its family.
CONTROLNETS: dict[str, tuple[str, str]] = {
    "controlnet_depth": ("controlnet-depth-sd15-tiny", "sd15"),
    "controlnet_normal": ("controlnet-normal-sd15-tiny", "sd15"),
    "controlnet_canny": ("controlnet-canny-sd15-tiny", "sd15"),
    "controlnet_depth_sdxl": ("controlnet-depth-sdxl-tiny", "sdxl"),
    "controlnet_canny_sdxl": ("controlnet-canny-sdxl-tiny", "sdxl"),
}


BUILDERS = ((SD15_DIR, build_sd15), (SDXL_DIR, build_sdxl),
            (INTRINSICS_DIR, build_marigold_intrinsics), (NORMALS_DIR, build_marigold_normals),
            (SHAP_E_DIR, build_shap_e_img2img),
            *((folder, _controlnet_builder(family, salt))
              for salt, (folder, family) in enumerate(CONTROLNETS.values())),
            *transformer_families.BUILDERS)


def registry_document() -> dict[str, Any]:
    """The registry file for the tiny models; sources are relative to the file's folder."""
    return {
        "format": REGISTRY_FORMAT,
        "models": {
            SD15_DIR: {"source": SD15_DIR, "family": "sd15", "kind": "text_to_image",
                       "tiny": True},
            SDXL_DIR: {"source": SDXL_DIR, "family": "sdxl", "kind": "text_to_image",
                       "tiny": True},
            INTRINSICS_DIR: {"source": INTRINSICS_DIR, "family": "marigold", "kind": "intrinsics",
                             "tiny": True},
            NORMALS_DIR: {"source": NORMALS_DIR, "family": "marigold", "kind": "normals",
                          "tiny": True},
            SHAP_E_DIR: {"source": SHAP_E_DIR, "family": "shap_e", "kind": "image_to_3d", "tiny": True},
            **{folder: {"source": folder, "family": family, "kind": "controlnet", "tiny": True}
               for folder, family in CONTROLNETS.values()},
            **{name: entry for extra in EXTRAS for name, entry in extra.REGISTRY_MODELS.items()},
            **transformer_families.REGISTRY_MODELS,
        },
        "roles": {"text_to_image": SD15_DIR, "intrinsics": INTRINSICS_DIR, "normals": NORMALS_DIR,
                  "image_to_3d": SHAP_E_DIR,
                  **{role: folder for role, (folder, _) in CONTROLNETS.items()},
                  **{role: name for extra in EXTRAS for role, name in extra.REGISTRY_ROLES.items()},
                  **transformer_families.REGISTRY_ROLES},
    }


def factory_digest() -> str:
    """Of this factory's source: tests and the demo keep one build per digest, so a change to what make-tiny
    builds is never served from an older build."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:10]


def tiny_folder(root: Path, version: str) -> Path:
    """Where the checkout keeps its tiny build: ``root/.cache/tiny-models/<version>-<factory digest>``."""
    return root / ".cache" / "tiny-models" / f"{version}-{factory_digest()}"


def make_tiny(dest: str | os.PathLike, seed: int = 0) -> Path:
    """Build every tiny pipeline under ``dest`` and return the path of ``dest/registry.json``."""
    import shutil
    import tempfile

    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sd-tiny-") as scratch:
        for name, build in BUILDERS:
            pipe = build(Path(scratch), seed)
            if (dest / name).is_dir():  # a rebuild leaves no stale files from older layouts
                shutil.rmtree(dest / name)
            pipe.save_pretrained(str(dest / name), safe_serialization=True)
    for extra in EXTRAS:
        extra.write_tiny(dest, seed)
    registry = dest / "registry.json"
    registry.write_text(json.dumps(registry_document(), indent=2) + "\n", encoding="utf-8")
    return registry
