"""The tiny Shap-E image-to-3D pipeline, its marching-cubes table and the shaping of its renderer.

Shap-E's latent is sized to its renderer's MLP (see :class:`TinyShapESizes`). The renderer is also
fit, briefly and deterministically, so that every latent decodes to a closed, coloured, roughly
spherical surface (random weights decode to no surface at all): see :func:`shape_shap_e_renderer`.
torch, diffusers, transformers and numpy are imported inside functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

POSENC_OCTAVES = 15  # diffusers' encode_position: the point, then sin and cos at 15 octaves
POSENC_FEATURES = 3 + 3 * 2 * POSENC_OCTAVES  # 93


@dataclass(frozen=True)
class TinyShapESizes:
    """Widths of the tiny Shap-E image-to-3D pipeline, and which ones must agree.

    The prior denoises ``num_embeddings`` latent vectors of ``latent_dim`` each; the renderer's
    ``params_proj`` turns consecutive runs of those vectors into the weights of the first four
    layers of its MLP (``param_shapes``: one vector per output row), so ``num_embeddings`` is the
    sum of the rows (4 x ``mlp_hidden``; the real model: 4 x 256 = 1024) and ``latent_dim`` is both
    the prior's ``embedding_dim`` and the renderer's ``d_latent`` (real: 1024). The prior reads the
    CLIP vision encoder's patch features: its ``embedding_proj_dim`` is the encoder's hidden size
    (real: 1024, ViT-L/14 at 224 px, 256 patches), and it predicts a mean and a variance per latent
    (``clip_embed_dim`` = 2 x ``latent_dim``). The first MLP layer reads the NeRF positional
    encoding of a point: 3 + 3 x 2 x 15 = 93 inputs.
    """

    mlp_hidden: int = 16  # renderer MLP width (real: 256)
    mlp_layers: int = 6  # the first 4 take their weights from the latent, as in the real model
    latent_dim: int = 16
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    vision_image: int = 32  # CLIP image processor size; 32 / 8 = 4 x 4 patches
    vision_patch: int = 8
    prior_heads: int = 2
    prior_head_dim: int = 8
    prior_layers: int = 2

    @property
    def param_shapes(self) -> tuple[tuple[int, int], ...]:
        return ((self.mlp_hidden, POSENC_FEATURES),) + ((self.mlp_hidden, self.mlp_hidden),) * 3

    @property
    def num_embeddings(self) -> int:
        return sum(rows for rows, _ in self.param_shapes)


SHAP_E_SIZES = TinyShapESizes()
SHAP_E_PARAM_NAMES = tuple(f"nerstf.mlp.{i}.weight" for i in range(4))
# Shaping (see shape_shap_e_renderer): the surface the tiny renderer learns, and how much the
# latent may move it.
SHAP_E_RADIUS = 0.5  # sphere radius in the renderer's [-1, 1]^3 volume
SHAP_E_LATENT_GAIN = 0.02  # LayerNorm gain of params_proj: how far a latent moves the MLP weights
SHAP_E_LOW_OCTAVES = 2  # positional-encoding octaves the first layer may use (a smooth field)
SHAP_E_FIT_STEPS = 300
SHAP_E_FIT_POINTS = 2048
SHAP_E_FIT_LR = 5e-2


# The corners of a marching-cubes cell are numbered x + 2y + 4z (bit set: the field is > 0, inside);
# its 12 edges as diffusers' MeshDecoder numbers them: 4 along x (at (y, z) = (0,0), (1,0), (0,1),
# (1,1)), then 4 along y (at (x, z)), then 4 along z (at (x, y)).


def _corner_bits(corner: int) -> tuple[int, int, int]:
    return corner & 1, (corner >> 1) & 1, (corner >> 2) & 1


def _edge_between(a: int, b: int) -> int:
    x, y, z = _corner_bits(a & b)  # the lower end
    axis = (a ^ b).bit_length() - 1
    return (y + 2 * z, 4 + x + 2 * z, 8 + x + 2 * y)[axis]


def _edge_ends(edge: int) -> tuple[int, int]:
    axis, k = divmod(edge, 4)
    u, v = [a for a in range(3) if a != axis]
    low = (k & 1) << u | (k >> 1) << v
    return low, low | 1 << axis


def _cube_faces() -> list[tuple[int, int, int, int]]:
    """The 6 faces, each as its 4 corners in cyclic order."""
    faces = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for side in (0, 1):
            faces.append(tuple(side << axis | du << u | dv << v for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1))))
    return faces  # type: ignore[return-value]


def marching_cubes_table() -> tuple[Any, Any]:
    """The lookup table diffusers' ``MeshDecoder`` reads: ``cases`` 256 x 5 x 3 (edge indices of up to
    5 triangles per corner configuration) and ``masks`` 256 x 5 (which of them exist).

    ``MeshDecoder`` keeps the table in buffers that a checkpoint fills (they are zeros when the class is
    constructed, and a decoder with zeros makes no triangles), so the tiny renderer carries its own,
    derived here from the cube rather than typed in. On each face the crossed edges are joined in pairs;
    a face with all four edges crossed (diagonal corners alike) is resolved by cutting each inside corner
    off on its own, which depends on that face's corners only, so neighbouring cells agree and the surface
    is closed. The segments chain into loops around the cell; each loop is ordered counter-clockwise seen
    from outside (normals point out of the solid) and cut into a triangle fan. No configuration needs more
    than 5 triangles.
    """
    import numpy as np

    cases = np.zeros((256, 5, 3), dtype=np.int64)
    masks = np.zeros((256, 5), dtype=bool)
    centres = {e: np.mean([_corner_bits(c) for c in _edge_ends(e)], axis=0) for e in range(12)}
    for config in range(256):
        inside = [bool(config >> c & 1) for c in range(8)]
        neighbours: dict[int, list[int]] = {}
        for face in _cube_faces():
            edges = [_edge_between(face[i], face[(i + 1) % 4]) for i in range(4)]
            crossed = [i for i in range(4) if inside[face[i]] != inside[face[(i + 1) % 4]]]
            if len(crossed) == 2:
                pairs = [(edges[crossed[0]], edges[crossed[1]])]
            else:  # 0 or 4 crossings; with 4, one segment around each inside corner
                pairs = [(edges[k - 1], edges[k]) for k in range(4) if len(crossed) == 4 and inside[face[k]]]
            for a, b in pairs:
                neighbours.setdefault(a, []).append(b)
                neighbours.setdefault(b, []).append(a)
        triangles: list[tuple[int, int, int]] = []
        seen: set[int] = set()
        for start in sorted(neighbours):
            if start in seen:
                continue
            loop, seen_here = [start], {start}
            while True:
                following = [n for n in neighbours[loop[-1]] if n not in seen_here]
                if not following:
                    break
                loop.append(following[0])
                seen_here.add(following[0])
            seen |= seen_here
            points = [centres[e] for e in loop]
            normal = sum(np.cross(points[i], points[(i + 1) % len(points)]) for i in range(len(points)))
            outward = np.zeros(3)
            for e in loop:
                low, high = _edge_ends(e)
                outward[e // 4] += 1.0 if inside[low] and not inside[high] else -1.0
            if float(np.dot(normal, outward)) < 0:
                loop.reverse()
            triangles += [(loop[0], loop[i], loop[i + 1]) for i in range(1, len(loop) - 1)]
        assert len(triangles) <= 5, (config, triangles)
        for i, triangle in enumerate(triangles):
            cases[config, i] = triangle
            masks[config, i] = True
    return cases, masks


def _shap_e_renderer(seed: int) -> Any:
    import torch
    from diffusers.pipelines.shap_e.renderer import ShapERenderer

    torch.manual_seed(seed)
    sizes = SHAP_E_SIZES
    renderer = ShapERenderer(
        param_names=SHAP_E_PARAM_NAMES,
        param_shapes=sizes.param_shapes,
        d_latent=sizes.latent_dim,
        d_hidden=sizes.mlp_hidden,
        n_output=12,  # sdf, 2 densities, 3 x RGB (stf, nerf coarse, nerf fine): fixed by the renderer
        n_hidden_layers=sizes.mlp_layers,
        act_fn="swish",
        insert_direction_at=4,
        background=(255.0, 255.0, 255.0),
    )
    cases, masks = marching_cubes_table()
    with torch.no_grad():
        renderer.mesh_decoder.cases.copy_(torch.from_numpy(cases))
        renderer.mesh_decoder.masks.copy_(torch.from_numpy(masks))
    shape_shap_e_renderer(renderer, seed + 1)
    return renderer.eval()


def _sphere_targets(points: Any) -> Any:
    """Raw (pre-activation) outputs of the renderer MLP for a coloured sphere of SHAP_E_RADIUS.

    Channel 0 is the signed distance (tanh; > 0 inside), 1-2 the NeRF densities (relu), 3-11 three
    RGB triples (sigmoid; the mesh colours are 3-5): a smooth colour by direction from the centre.
    """
    import torch

    radius = points.norm(dim=-1, keepdim=True)
    sdf = 2.0 * (SHAP_E_RADIUS - radius)
    density = 10.0 * (SHAP_E_RADIUS - radius)
    colour = 0.5 + 0.35 * points / radius.clamp_min(1e-6)
    logit = torch.log(colour / (1.0 - colour))
    return torch.cat([sdf, density, density, logit, logit, logit], dim=-1)


def shape_shap_e_renderer(renderer: Any, seed: int) -> None:
    """Fit the random renderer so that any latent decodes to a (slightly perturbed) coloured sphere.

    Random weights give a signed-distance field without a zero crossing (an empty mesh) or a noise
    of tiny blobs. The renderer's ``params_proj`` maps each latent vector through a linear layer and a
    LayerNorm to the weights of the MLP's first four layers: here the LayerNorm gain is
    SHAP_E_LATENT_GAIN (its shift zero), so a latent moves those weights by at most a few hundredths
    whatever its scale, and the projection biases carry the weights themselves. The first layer may
    only use the point and its SHAP_E_LOW_OCTAVES lowest positional-encoding octaves (its other
    columns stay zero), which keeps the field smooth. Adam then fits the projection biases and the
    MLP's own parameters, for random latents, to the analytic sphere (:func:`_sphere_targets`) at
    points drawn in the volume and near the surface. Seeded, on one thread: the same bytes every build.
    """
    import torch
    from torch.func import functional_call

    sizes = SHAP_E_SIZES
    generator = torch.Generator().manual_seed(seed)
    low = torch.zeros(POSENC_FEATURES)
    low[:3] = 1.0
    for octave in range(SHAP_E_LOW_OCTAVES):
        for start in (3, 3 + 3 * POSENC_OCTAVES):  # sines, then cosines (sin at +pi/2)
            low[start + 3 * octave:start + 3 * octave + 3] = 1.0
    mlp, projections = renderer.mlp, renderer.params_proj.projections
    trained: list[Any] = []
    with torch.no_grad():
        for index, (name, (rows, columns)) in enumerate(zip(SHAP_E_PARAM_NAMES, sizes.param_shapes, strict=True)):
            project = projections[name.replace(".", "__")]
            allowed = low if index == 0 else torch.ones(columns)
            project.norm.weight.copy_(SHAP_E_LATENT_GAIN * allowed)
            project.norm.bias.zero_()
            bound = float(allowed.sum()) ** -0.5  # PyTorch's default Linear range for the used inputs
            start = (torch.rand(rows, columns, generator=generator) * 2 - 1) * bound * allowed
            project.proj.bias.copy_(start.reshape(-1))
            trained.append(project.proj.bias)
    first_mask = low.repeat(sizes.param_shapes[0][0])
    projected = {name[len("nerstf."):] for name in SHAP_E_PARAM_NAMES}
    trained += [p for n, p in mlp.named_parameters() if n not in projected]
    raw: list[Any] = []
    hook = mlp.mlp[-1].register_forward_hook(lambda module, args, out: raw.append(out))
    optimiser = torch.optim.Adam(trained, lr=SHAP_E_FIT_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, SHAP_E_FIT_STEPS)
    weights = torch.tensor([8.0, 0.2, 0.2] + [1.0] * 9)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        half = SHAP_E_FIT_POINTS // 2
        for _ in range(SHAP_E_FIT_STEPS):
            uniform = torch.rand(half, 3, generator=generator) * 2 - 1
            directions = torch.randn(half, 3, generator=generator)
            directions = directions / directions.norm(dim=-1, keepdim=True)
            shell = directions * (SHAP_E_RADIUS + (torch.rand(half, 1, generator=generator) - 0.5) * 0.3)
            points = torch.cat([uniform, shell])[None]
            latent = torch.randn(1, sizes.num_embeddings, sizes.latent_dim, generator=generator)
            params = {k[len("nerstf."):]: v[0] for k, v in renderer.params_proj(latent).items()}
            raw.clear()
            functional_call(mlp, params, (), {"position": points, "direction": None, "ts": None,
                                              "nerf_level": "fine", "rendering_mode": "stf"})
            loss = (((raw[0] - _sphere_targets(points)) ** 2) * weights).mean()
            optimiser.zero_grad()
            loss.backward()
            trained[0].grad *= first_mask  # the first layer keeps away from high frequencies
            optimiser.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
        hook.remove()
    with torch.no_grad():  # the MLP's own copies: what a latent of zeros would project to
        for name, shape in zip(SHAP_E_PARAM_NAMES, sizes.param_shapes, strict=True):
            mlp.get_parameter(name[len("nerstf."):]).copy_(projections[name.replace(".", "__")].proj.bias.view(shape))
    renderer.zero_grad(set_to_none=True)


def build_shap_e_img2img(scratch: Path, seed: int = 0) -> Any:
    """A ShapEImg2ImgPipeline shaped like openai/shap-e-img2img, with a renderer fit to a sphere."""
    import torch
    from diffusers import HeunDiscreteScheduler, PriorTransformer, ShapEImg2ImgPipeline
    from transformers import CLIPVisionConfig, CLIPVisionModel

    sizes = SHAP_E_SIZES
    torch.manual_seed(seed + 2)
    prior: Any = PriorTransformer(
        num_attention_heads=sizes.prior_heads,
        attention_head_dim=sizes.prior_head_dim,
        num_layers=sizes.prior_layers,
        embedding_dim=sizes.latent_dim,
        num_embeddings=sizes.num_embeddings,
        additional_embeddings=0,
        time_embed_act_fn="gelu",
        norm_in_type="layer",
        embedding_proj_norm_type="layer",
        encoder_hid_proj_type=None,
        added_emb_type=None,
        time_embed_dim=4 * sizes.prior_heads * sizes.prior_head_dim,
        embedding_proj_dim=sizes.vision_hidden,
        clip_embed_dim=2 * sizes.latent_dim,  # mean and variance; the pipeline keeps the mean
    )
    torch.manual_seed(seed + 1)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=sizes.vision_hidden, intermediate_size=2 * sizes.vision_hidden,
        num_hidden_layers=sizes.vision_layers, num_attention_heads=sizes.vision_heads,
        image_size=sizes.vision_image, patch_size=sizes.vision_patch, projection_dim=sizes.vision_hidden,
    )).eval()
    # What openai/shap-e-img2img ships, on the Shap-E prior's 1024-step exponential schedule.
    scheduler = HeunDiscreteScheduler(beta_schedule="exp", num_train_timesteps=1024, prediction_type="sample",
                                      use_karras_sigmas=True, clip_sample=True, clip_sample_range=1.0)
    prior.eval()
    pipe = ShapEImg2ImgPipeline(prior=prior, image_encoder=image_encoder,
                                image_processor=_clip_image_processor(), scheduler=scheduler,
                                shap_e_renderer=_shap_e_renderer(seed + 3))
    # Without torchvision, transformers builds the Pillow variant of the processor; record the class
    # name the real model records, so loading takes the same path (and the same fallback).
    pipe.register_to_config(image_processor=("transformers", "CLIPImageProcessor"))  # type: ignore[attr-defined]
    return pipe


def _clip_image_processor() -> Any:
    """CLIP preprocessing (resize, centre crop, CLIP mean / std) at the tiny encoder's size."""
    import transformers

    # no torchvision needed; older transformers have the one class
    processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    size = SHAP_E_SIZES.vision_image
    return processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}, resample=3)
