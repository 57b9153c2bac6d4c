"""Add-on preferences: a local backend (which Python, which models, which device) or a remote one
(address, token, pinned certificate)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from ..contract.addresses import is_loopback
from . import paths
from .jobs import known_servers, model_sizes, readiness, torch_choice
from .jobs.remote_connection import ConfigError, parse_address

ENV_PYTHON = "SCENE_DIFFUSION_BACKEND_PYTHON"
ENV_MODELS = "SCENE_DIFFUSION_MODELS"
# These win over the preferences (scripts, render farms): a remote server and the file holding its token.
ENV_REMOTE = "SCENE_DIFFUSION_REMOTE"
ENV_REMOTE_TOKEN_FILE = "SCENE_DIFFUSION_REMOTE_TOKEN_FILE"
ENV_REMOTE_INSECURE = "SCENE_DIFFUSION_REMOTE_INSECURE"
LOCAL, REMOTE = "LOCAL", "REMOTE"


VRAM_BUDGETS = [
    ("auto", "Auto", "Chosen from the GPU's memory"),
    ("high", "High (16 GB+)", "Everything on the GPU: fastest"),
    ("12gb", "12 GB", "Some memory savings"),
    ("8gb", "8 GB", "Models moved to the GPU only while they run; the VAE decodes in tiles"),
    ("6gb", "6 GB", "The least GPU memory, the slowest"),
]


class CheckpointEntry(bpy.types.PropertyGroup):
    """One of the artist's own checkpoints: usable by its name in every Model field."""

    name: StringProperty(name="Name", description="The name to type in a Model field")  # type: ignore[valid-type]
    filepath: StringProperty(  # type: ignore[valid-type]
        name="File", subtype="FILE_PATH", description="A single-file checkpoint (.safetensors, or .ckpt)")
    family: EnumProperty(  # type: ignore[valid-type]
        name="Family", default="auto",
        items=[("auto", "Automatic", "Read from the file's weights"), ("sd15", "SD 1.5", ""), ("sdxl", "SDXL", "")])


@dataclass(frozen=True)
class RemoteSettings:
    address: str
    token: str = field(repr=False)
    insecure: bool


class SceneDiffusionPreferences(bpy.types.AddonPreferences):
    bl_idname = paths.ADDON_ID

    backend_python: StringProperty(  # type: ignore[valid-type]
        name="Backend Python", subtype="FILE_PATH",
        description="Python interpreter with torch and diffusers that runs the backend. "
                    "Empty: the managed environment made by Setup Backend")
    models_registry: StringProperty(  # type: ignore[valid-type]
        name="Model Registry", subtype="FILE_PATH",
        description="Registry JSON file (or a folder holding registry.json) mapping roles to models. "
                    "Empty: the built-in Hugging Face model ids")
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device", default="auto",
        items=[("auto", "Automatic", "CUDA, then Apple MPS, then CPU"), ("cuda", "CUDA", ""),
               ("mps", "Apple MPS", ""), ("cpu", "CPU", "")])
    torch_build: EnumProperty(  # type: ignore[valid-type]
        name="Torch Build", default=torch_choice.AUTO, items=torch_choice.override_items(),
        description="Which torch Setup Backend installs; Automatic detects the GPU")
    precision: EnumProperty(  # type: ignore[valid-type]
        name="Precision", default="auto",
        items=[("auto", "Automatic", "Half precision on GPUs, full on CPU"), ("fp16", "Half (fp16)", ""),
               ("bf16", "BFloat16", ""), ("fp32", "Full (fp32)", "")])
    allow_download: BoolProperty(  # type: ignore[valid-type]
        name="Download Missing Models", default=True,
        description="Let the backend download models it does not find locally "
                    "(only when Blender's online access is allowed)")
    allow_unsafe_weights: BoolProperty(  # type: ignore[valid-type]
        name="Allow Pickle Weights", default=False,
        description="Also load .bin/.ckpt weights, which can run code when loaded. "
                    "Off: safetensors only")
    job_retention: IntProperty(  # type: ignore[valid-type]
        name="Jobs to Keep", default=50, min=1, soft_max=500,
        description="Finished job folders kept on disk; older ones are deleted")
    prewarm: BoolProperty(  # type: ignore[valid-type]
        name="Start the Backend Early", default=True,
        description="Start the local backend in the background when a Scene Diffusion panel is first shown or "
                    "a .blend file is opened, and load the Texture panel's model when memory allows, so the "
                    "first Generate does not wait for them. Does nothing with a remote backend")
    handshake_timeout: FloatProperty(  # type: ignore[valid-type]
        name="Start Timeout", default=120.0, min=1.0, soft_max=600.0, unit="TIME_ABSOLUTE",
        description="Seconds to wait for a starting backend before giving up")
    backend: EnumProperty(  # type: ignore[valid-type]
        name="Backend", default=LOCAL,
        items=[(LOCAL, "Local", "A backend process on this computer, started when needed"),
               (REMOTE, "Remote", "A backend server on another computer (python -m backend serve --listen)")])
    remote_address: StringProperty(  # type: ignore[valid-type]
        name="Address", description="The remote backend's HOST:PORT, as its first line of output says")
    remote_token: StringProperty(  # type: ignore[valid-type]
        name="Token", subtype="PASSWORD",
        description="The server's token (the content of its --token-file)")
    remote_insecure: BoolProperty(  # type: ignore[valid-type]
        name="Insecure (Loopback Only)", default=False,
        description="Plain TCP without TLS, for a server started with --insecure on this computer")
    commercial_work: BoolProperty(  # type: ignore[valid-type]
        name="Commercial Work", default=False,
        description="Refuse models whose licence forbids commercial use (every job checks its models)")
    vram_budget: EnumProperty(  # type: ignore[valid-type]
        name="VRAM Budget", default="auto", items=VRAM_BUDGETS,
        description="How much GPU memory the backend may use; less is slower")
    checkpoints: CollectionProperty(type=CheckpointEntry)  # type: ignore[valid-type]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        col = layout.column()
        if os.environ.get(ENV_REMOTE):
            col.label(text=f"{ENV_REMOTE} overrides the backend: remote {os.environ[ENV_REMOTE]}", icon="INFO")
        else:
            col.row().prop(self, "backend", expand=True)
        if is_remote(self.backend):
            draw_remote(self, col)
            col.prop(self, "commercial_work")
            col.prop(self, "job_retention")
            return
        if os.environ.get(ENV_PYTHON):
            col.label(text=f"{ENV_PYTHON} overrides the interpreter: {os.environ[ENV_PYTHON]}", icon="INFO")
        col.prop(self, "backend_python")
        row = col.row()
        sub = row.row()
        sub.operator("scene_diffusion.setup_backend", icon="CONSOLE")
        sub.enabled = bpy.app.online_access
        row.prop(self, "torch_build", text="")
        draw_torch_choice(self, col)
        if not bpy.app.online_access:
            col.label(text="Setup needs online access (Preferences > System > Network)", icon="ERROR")
        if os.environ.get(ENV_MODELS):
            col.label(text=f"{ENV_MODELS} overrides the registry: {os.environ[ENV_MODELS]}", icon="INFO")
        col.prop(self, "models_registry")
        draw_checkpoints(self, col.box().column())
        col.prop(self, "allow_download")
        col.prop(self, "allow_unsafe_weights")
        row = col.row()
        row.prop(self, "device")
        row.prop(self, "precision")
        col.prop(self, "vram_budget")
        col.prop(self, "commercial_work")
        col.prop(self, "job_retention")
        col.prop(self, "prewarm")
        col.prop(self, "handshake_timeout")


def draw_checkpoints(prefs: SceneDiffusionPreferences, col: bpy.types.UILayout) -> None:
    """The artist's checkpoints: name, file and family per row."""
    row = col.row()
    row.label(text="Checkpoints", icon="FILE_3D")
    row.operator("scene_diffusion.add_checkpoint", text="Add", icon="ADD")
    for index, entry in enumerate(prefs.checkpoints):
        row = col.row(align=True)
        row.prop(entry, "name", text="")
        row.prop(entry, "filepath", text="")
        row.prop(entry, "family", text="")
        row.operator("scene_diffusion.remove_checkpoint", text="", icon="X").index = index


def draw_torch_choice(prefs: SceneDiffusionPreferences, col: bpy.types.UILayout) -> None:
    """What Automatic found (and, with an override, what gets installed instead)."""
    found = torch_choice.automatic()
    box = col.column(align=True)
    if found is None:
        box.label(text="Automatic: checking the GPU…", icon="TIME")
        return
    box.label(text=f"Automatic: {found.reason}", icon="INFO")
    chosen = torch_choice.automatic(prefs.torch_build)
    if chosen is not None and prefs.torch_build != torch_choice.AUTO:
        box.label(text=f"Setup installs: {chosen.reason}")
    if chosen is not None and chosen.warning:
        warn = box.row()
        warn.alert = True
        warn.label(text=chosen.warning, icon="ERROR")


def draw_remote(prefs: SceneDiffusionPreferences, col: bpy.types.UILayout) -> None:
    """Address, token, the pinned server key, and what the last Test Connection found."""
    from .jobs import service  # service imports this module

    if not os.environ.get(ENV_REMOTE):
        col.prop(prefs, "remote_address")
    if os.environ.get(ENV_REMOTE_TOKEN_FILE):
        col.label(text=f"{ENV_REMOTE_TOKEN_FILE} overrides the token: {os.environ[ENV_REMOTE_TOKEN_FILE]}",
                  icon="INFO")
    else:
        col.prop(prefs, "remote_token")
    if os.environ.get(ENV_REMOTE_INSECURE) == "1":
        col.label(text=f"{ENV_REMOTE_INSECURE}=1: plain TCP (loopback only)", icon="INFO")
    else:
        col.prop(prefs, "remote_insecure")
    address = remote_address()
    fingerprint = known_servers.pinned(paths.known_servers_path(), address) if address else None
    box = col.box().column(align=True)
    if fingerprint:
        pairs = known_servers.display(fingerprint).removeprefix("SHA256:").split(":")
        box.label(text="Server key, pinned on first use: SHA256", icon="LOCKED")
        box.label(text=":".join(pairs[:16]))
        box.label(text=":".join(pairs[16:]))
    else:
        box.label(text="Server key: pinned on the first connection", icon="UNLOCKED")
    row = col.row()
    row.operator("scene_diffusion.test_connection", icon="LINKED")
    sub = row.row()
    sub.enabled = fingerprint is not None
    sub.operator("scene_diffusion.forget_server_key", icon="UNLOCKED")
    for line in service.connection_report:
        col.label(text=line)


def is_remote(choice: str | None = None) -> bool:
    """Whether jobs go to a remote server: the environment, then the preference."""
    if os.environ.get(ENV_REMOTE):
        return True
    return (choice if choice is not None else get().backend) == REMOTE


def remote_address() -> str:
    """The chosen server's address, without reading any token (cheap enough for drawing)."""
    return (os.environ.get(ENV_REMOTE) or get().remote_address).strip()


def remote_settings() -> RemoteSettings | None:
    """The remote server to use, or None for the local backend; ConfigError for settings that cannot work."""
    if not is_remote():
        return None
    prefs = get()
    address = remote_address()
    if not address:
        raise ConfigError("no remote backend address is set", "enter HOST:PORT in the add-on preferences")
    host, _port = parse_address(address)
    token_file = os.environ.get(ENV_REMOTE_TOKEN_FILE)
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the token file {token_file} ({ENV_REMOTE_TOKEN_FILE}): {exc.strerror}",
                              "point it at the server's --token-file, copied to this computer") from None
    else:
        token = prefs.remote_token.strip()
    if not is_loopback(host) and not bpy.app.online_access:
        raise ConfigError(f"a remote backend at {address} needs network access, and Blender's online access is off",
                          "allow it in Preferences > System > Network, or use the local backend")
    insecure = os.environ.get(ENV_REMOTE_INSECURE) == "1" or prefs.remote_insecure
    return RemoteSettings(address, token, insecure)


def get() -> SceneDiffusionPreferences:
    return bpy.context.preferences.addons[paths.ADDON_ID].preferences  # type: ignore[return-value]


def backend_python() -> str:
    """Environment override, then the preference, then the managed environment."""
    chosen = os.environ.get(ENV_PYTHON) or bpy.path.abspath(get().backend_python)
    return chosen or str(paths.venv_python(paths.managed_venv()))


def models_registry() -> str | None:
    chosen = os.environ.get(ENV_MODELS) or bpy.path.abspath(get().models_registry)
    return chosen or None


def torch_build() -> torch_choice.TorchChoice:
    """What Setup Backend installs: the preference's override, or what this computer's GPU asks for."""
    found = torch_choice.automatic(get().torch_build, wait=True)
    assert found is not None  # wait=True always decides
    return found


def readiness_now() -> readiness.Readiness:
    """The Backend panel's readiness lines, recomputed at most every few seconds or on a settings change."""
    prefs = get()
    python = backend_python()
    managed = python == str(paths.venv_python(paths.managed_venv()))
    return readiness.cache.get(readiness.Inputs(
        python, managed, models_registry(), prefs.device, torch_choice.automatic(prefs.torch_build),
        str(model_sizes.hub_cache())))


classes = (CheckpointEntry, SceneDiffusionPreferences)
