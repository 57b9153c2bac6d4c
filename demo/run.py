"""`make demo`: a real Blender scene through every capability Scene Diffusion has so far.

Builds a small scene with the `bpy` module, installs the extension the way Blender does
(built and validated with Blender's own extension tool), and through the real backend
process: generates a seamless texture onto the scene's objects, derives a PBR material from it
and exports its maps as a multilayer EXR, renders the scene with depth + normal ControlNets
from Blender's own passes, turns that render into a mesh placed beside the ball
(image to 3D), and textures that mesh from four automatic views, each generated from the texture
baked so far and projected into a new UV map (projection baking). Then renders the whole scene with
Cycles and writes the outputs and a summary into demo_output/. Last, the texture job runs once more
through a remote backend server on loopback (TLS, token) and the summary says whether its pixels
match the local run's.

Models: $SCENE_DIFFUSION_MODELS when set (a registry of real weights), else tiny
random-weight pipelines built by `python -m backend models make-tiny` — the pictures are
then noise, but every step runs the same code as with real weights; the summary says which.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from backend import __version__  # noqa: E402
from devtools import extension  # noqa: E402
from devtools.tiny_models import tiny_folder  # noqa: E402

OUT = Path(os.environ.get("SCENE_DIFFUSION_DEMO_OUT", ROOT / "demo_output"))
PROMPT = "weathered terracotta roof tiles, seamless texture, top-down, photographic"


def models_registry() -> tuple[str, bool]:
    """(registry path, tiny?)"""
    chosen = os.environ.get("SCENE_DIFFUSION_MODELS")
    if chosen:
        return chosen, False
    tiny = tiny_folder(ROOT, __version__)
    if not (tiny / "registry.json").is_file():
        print(f"no real weights configured: building tiny models in {tiny}", flush=True)
        subprocess.run([sys.executable, "-m", "backend", "models", "make-tiny", str(tiny)], cwd=ROOT,
                       check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return str(tiny), True


def build_scene(bpy):  # type: ignore[no-untyped-def]
    bpy.ops.wm.read_homefile(use_empty=True, use_factory_startup=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=6)
    ground = bpy.context.object
    ground.name = "Ground"
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1.0, location=(0, 0, 1.0), segments=48, ring_count=24)
    ball = bpy.context.object
    ball.name = "Ball"
    bpy.ops.object.shade_smooth()
    bpy.ops.object.camera_add(location=(5.0, -5.0, 3.6))
    camera = bpy.context.object
    aim = ball.location - camera.location  # look at the ball, Blender cameras look down -Z
    camera.rotation_euler = aim.to_track_quat("-Z", "Y").to_euler()
    scene.camera = camera
    bpy.ops.object.light_add(type="SUN", rotation=(0.6, 0.2, 0.8))
    bpy.context.object.data.energy = 3.0
    world = bpy.data.worlds.new("World")
    scene.world = world
    world.color = (0.05, 0.06, 0.08)
    return scene, ground, ball


def tile_2x2(src: Path, dest: Path) -> None:
    from PIL import Image

    with Image.open(src) as img:
        tiled = Image.new(img.mode, (img.width * 2, img.height * 2))
        for x in (0, img.width):
            for y in (0, img.height):
                tiled.paste(img, (x, y))
        scale = max(1, 256 // tiled.width)  # tiny-model textures are 64 px: enlarge to see
        tiled.resize((tiled.width * scale, tiled.height * scale), Image.Resampling.NEAREST).save(dest)


def side_by_side(paths: list[Path], dest: Path, height: int = 192) -> None:
    """Conditioning images and the result in one picture, enlarged to a visible size."""
    from PIL import Image

    images = []
    for path in paths:
        with Image.open(path) as img:
            width = round(img.width * height / img.height)
            images.append(img.convert("RGB").resize((width, height), Image.Resampling.NEAREST))
    strip = Image.new("RGB", (sum(i.width for i in images) + 8 * (len(images) - 1), height), (255, 255, 255))
    x = 0
    for image in images:
        strip.paste(image, (x, 0))
        x += image.width + 8
    strip.save(dest)


def remote_texture(bpy, api, registry: str, local_png: Path) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The texture job once more through a remote server on loopback (TLS, token, pinned certificate; its own
    root, reached only over the network), the way a script selects one: the same seed gives the same pixels."""
    from PIL import Image

    from devtools.remote_server import RemoteServer

    server = RemoteServer(Path(tempfile.mkdtemp(prefix="scene_diffusion_demo_server_")), Path(registry))
    address = server.address
    os.environ.update(SCENE_DIFFUSION_REMOTE=server.address, SCENE_DIFFUSION_REMOTE_TOKEN_FILE=str(server.token_file))
    try:
        bpy.ops.object.select_all(action="DESELECT")  # the image only: the scene keeps its materials
        t0 = time.monotonic()
        bpy.ops.scene_diffusion.generate_texture()
        seconds = time.monotonic() - t0
        job = api.service.supervisor().current_job()
        record = json.loads((job.job_dir / "job.json").read_text())
        remote_png = job.job_dir / "outputs" / "texture.png"
        shutil.copy(remote_png, OUT / "texture_remote.png")
        same = bool((np.asarray(Image.open(remote_png)) == np.asarray(Image.open(local_png))).all())
        server_jobs = sorted(p.name for p in server.jobs_root.glob("*/*"))
    finally:
        api.shutdown_backend()
        for name in ("SCENE_DIFFUSION_REMOTE", "SCENE_DIFFUSION_REMOTE_TOKEN_FILE"):
            os.environ.pop(name, None)
        server.stop()
    return {"server": address, "transport": "TLS, token, certificate pinned on first use",
            "fingerprint": server.fingerprint, "job": job.id, "status": record["status"],
            "ran_on_server_as": server_jobs, "recorded_server": record.get("remote", {}).get("server"),
            "same_pixels_as_local": same, "seconds": round(seconds, 2)}


def main() -> int:
    started = time.monotonic()
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    registry, tiny = models_registry()
    os.environ["SCENE_DIFFUSION_MODELS"] = registry
    os.environ.setdefault("SCENE_DIFFUSION_BACKEND_PYTHON", sys.executable)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    user_dir = Path(tempfile.mkdtemp(prefix="scene_diffusion_demo_user_"))
    extension.prepare_user_dir(user_dir)
    zip_path = extension.build(OUT / "dist")
    extension.validate(zip_path)
    import bpy

    module_name = extension.install(zip_path)
    import importlib

    api = importlib.import_module(f"{module_name}.addon.api")
    size = 64 if tiny else 512
    steps = 6 if tiny else 25

    scene, ground, ball = build_scene(bpy)
    settings = scene.scene_diffusion.texture
    settings.prompt, settings.width, settings.height, settings.steps = PROMPT, size, size, steps
    settings.random_seed, settings.seed = False, 1234
    # Model options: a LoRA at 0.8 and a sampler of the artist's choice (tiny models: the tiny LoRA).
    lora_file = Path(registry) / "loras" / "sd15-style-a.safetensors" if tiny else None
    if lora_file is not None and lora_file.is_file():
        entry = settings.options.loras.add()
        entry.filepath, entry.weight = str(lora_file), 0.8
    settings.options.scheduler = "euler_a"
    bpy.ops.object.select_all(action="DESELECT")
    ball.select_set(True)
    ground.select_set(True)
    bpy.context.view_layer.objects.active = ball
    t0 = time.monotonic()
    bpy.ops.scene_diffusion.generate_texture()
    texture_s = time.monotonic() - t0
    texture_image = next(n.image for n in ball.active_material.node_tree.nodes if n.type == "TEX_IMAGE")
    job = api.service.supervisor().current_job()
    record = json.loads((job.job_dir / "job.json").read_text())
    shutil.copy(job.job_dir / "outputs" / "texture.png", OUT / "texture.png")
    tile_2x2(OUT / "texture.png", OUT / "texture_tiled_2x2.png")
    shutil.copytree(job.job_dir, OUT / "job")

    # PBR: derive maps from the ball's new base colour, wire a full material, export as EXR.
    bpy.ops.object.select_all(action="DESELECT")
    ball.select_set(True)
    bpy.context.view_layer.objects.active = ball
    scene.scene_diffusion.pbr.image = None  # use the active material's base colour image
    t0 = time.monotonic()
    bpy.ops.scene_diffusion.derive_pbr()
    pbr_s = time.monotonic() - t0
    export = scene.scene_diffusion.export
    export.directory, export.basename, export.layout = str(OUT / "maps"), "ball", "multilayer"
    export.format, export.half, export.compression = "exr", True, "zip"
    bpy.ops.scene_diffusion.export_maps()
    from backend.imaging.exr import read_exr

    exported = read_exr(OUT / "maps" / "ball.exr")
    pbr_maps = sorted(api.find_maps(ball.active_material))

    # ControlNet render of the same scene: depth + normal from Blender's own passes.
    render_settings = scene.scene_diffusion.render
    render_settings.prompt = "a terracotta sphere on a tiled floor, soft evening light, photograph"
    render_settings.use_depth, render_settings.use_normal, render_settings.use_canny = True, True, False
    render_settings.normal.weight = 0.6
    render_settings.use_scene_resolution = False
    render_settings.width, render_settings.height = (96, 64) if tiny else (768, 512)
    render_settings.steps, render_settings.random_seed, render_settings.seed = steps, False, 99
    t0 = time.monotonic()
    bpy.ops.scene_diffusion.render_controlnet()
    controlnet_s = time.monotonic() - t0
    render_job = api.service.supervisor().current_job()
    render_record = json.loads((render_job.job_dir / "job.json").read_text())
    for name in ("render.png", "control_depth.png", "control_normal.png", "render.exr"):
        shutil.copy(render_job.job_dir / "outputs" / name, OUT / f"controlnet_{name}")
    side_by_side([OUT / f"controlnet_{n}.png" for n in ("control_depth", "control_normal", "render")],
                 OUT / "controlnet_strip.png")

    # Image to 3D: the ControlNet render becomes a mesh beside the ball.
    mesh_settings = scene.scene_diffusion.mesh
    mesh_settings.source, mesh_settings.image = "IMAGE", bpy.data.images["Diffusion Render"]
    mesh_settings.steps, mesh_settings.random_seed, mesh_settings.seed = (4 if tiny else 64), False, 5
    mesh_settings.frame_size, mesh_settings.target_size = (32 if tiny else 128), 1.2
    scene.cursor.location = (-0.2, 3.2, 0.0)  # clear of the ball, so the projection views see the mesh
    before = set(bpy.data.objects.keys())
    t0 = time.monotonic()
    bpy.ops.scene_diffusion.image_to_mesh()
    mesh_s = time.monotonic() - t0
    (generated,) = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - before]

    # Projection: four automatic views around the generated mesh, each generated with the depth ControlNet
    # from the texture baked so far (sequential), projected and baked into a new Smart-UV map.
    project = scene.scene_diffusion.project
    project.prompt = "glazed ceramic figure, hand-painted blue and white pattern, studio photograph"
    project.views, project.view_count, project.elevation, project.sequential = "AUTO", 4, 30.0, True
    project.width = project.height = 64 if tiny else 512
    project.texture_size = 256 if tiny else 1024
    project.steps, project.random_seed, project.seed = steps, False, 21
    project.unwrap, project.new_material = True, True
    # The roof-tile texture as the reference image (IP-Adapter): every view follows its style.
    if tiny:
        project.options.reference = texture_image
        project.options.reference_strength = 0.5
    bpy.ops.object.select_all(action="DESELECT")
    generated.select_set(True)
    bpy.context.view_layer.objects.active = generated
    t0 = time.monotonic()
    bpy.ops.scene_diffusion.project_texture()
    project_s = time.monotonic() - t0
    project_job = api.service.supervisor().current_job()
    project_record = json.loads((project_job.job_dir / "job.json").read_text())
    project_outputs = project_job.outputs  # the task's typed outputs (contract.tasks.ProjectTextureOutputs)
    shutil.copy(project_job.job_dir / project_outputs.textures_png[0], OUT / "projection_texture.png")
    shutil.copy(project_job.job_dir / project_outputs.textures[0], OUT / "projection_texture.exr")
    view_pngs = [project_job.job_dir / rel for rel in project_outputs.view_images]
    side_by_side([*view_pngs, OUT / "projection_texture.png"], OUT / "projection_strip.png")

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 16
    scene.render.resolution_x, scene.render.resolution_y = 480, 320
    scene.render.filepath = str(OUT / "render.png")
    t0 = time.monotonic()
    bpy.ops.render.render(write_still=True)
    render_s = time.monotonic() - t0
    bpy.ops.wm.save_as_mainfile(filepath=str(OUT / "demo.blend"))
    api.shutdown_backend()
    remote = remote_texture(bpy, api, registry, OUT / "texture.png")

    summary = {
        "models": {"registry": registry, "tiny_random_weights": tiny,
                   "text_to_image": record["models"]["text_to_image"]},
        "texture": {"prompt": PROMPT, "size": size, "steps": steps, "seed": record["seed"],
                    "seamless": True, "seam_ratio_x": record["info"]["seam_ratio_x"],
                    "seam_ratio_y": record["info"]["seam_ratio_y"], "seconds": round(texture_s, 2),
                    "material_on": [o.name for o in (ball, ground) if o.active_material]},
        "backend": record["backend"],
        "model_options": {"loras": record["models"].get("loras", []), "scheduler": record["options"]["scheduler"],
                          "projection_reference": project_record["request"]["reference"],
                          "projection_ip_adapter": project_record["models"].get("ip_adapter", {}).get("name", ""),
                          "projection_scheduler": project_record["options"]["scheduler"]},
        "pbr": {"material": ball.active_material.name, "maps": pbr_maps, "seconds": round(pbr_s, 2),
                "exported": "maps/ball.exr", "channels": exported.channels,
                "attributes": {k: exported.attributes[k] for k in ("prompt", "seed", "software")
                               if k in exported.attributes}},
        "controlnet_render": {"controls": render_record["info"]["controls"], "seed": render_record["seed"],
                              "size": [render_settings.width, render_settings.height],
                              "controlnets": [c["name"] for c in render_record["models"]["controlnets"]],
                              "seconds": round(controlnet_s, 2)},
        "image_to_mesh": {"object": generated.name, "vertices": len(generated.data.vertices),
                          "faces": len(generated.data.polygons), "size": round(max(generated.dimensions), 3),
                          "seconds": round(mesh_s, 2)},
        "projection": {"object": generated.name, "views": len(view_pngs), "sequential": True,
                       "texture_size": project.texture_size, "seed": project_record["seed"],
                       "seen_fraction": project_record["info"]["objects"][0]["seen_fraction"],
                       "material": generated.active_material.name, "seconds": round(project_s, 2)},
        "render": {"engine": "CYCLES", "samples": 16, "seconds": round(render_s, 2)},
        "remote": remote,
        "outputs": sorted(p.name for p in OUT.iterdir()),
        "total_seconds": round(time.monotonic() - started, 2),
    }
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    if tiny:
        print("\nThese pictures come from tiny random-weight models (no real weights configured): "
              "they are noise, produced by the same code path as real weights. Set "
              "SCENE_DIFFUSION_MODELS to a registry of real models for real textures.")
    print(f"\ndemo outputs in {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
