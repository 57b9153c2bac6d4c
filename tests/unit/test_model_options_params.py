"""The options a job adds to its base model (contract.tasks.options): typed, bounded, job-relative."""

from __future__ import annotations

import pytest

from backend.cli.tasks import UsageError, parse_lora
from contract.tasks import (
    MAX_LORAS,
    SCHEDULERS,
    LoraParams,
    ParamError,
    PbrParams,
    ProjectTextureParams,
    RenderParams,
    TextureParams,
    lora_input,
    params_for,
    reference_input,
)

LORA = "inputs/loras/00-style.safetensors"


def test_options_are_keyword_fields_of_every_generating_task_and_survive_the_wire():
    params = TextureParams(prompt="moss", loras=[{"file": LORA, "weight": 0.7, "name": "style.safetensors"}],
                           scheduler="euler_a", reference="inputs/reference.png", reference_strength=0.4,
                           commercial=True)
    assert params.loras == [LoraParams(LORA, 0.7, "style.safetensors")]  # plain objects become typed
    again = params_for("texture", params.to_dict())
    assert again == params
    for cls, required in ((RenderParams, {"controls": [{"kind": "depth"}]}),
                          (ProjectTextureParams, {"meshes": ["inputs/meshes/00.npz"]})):
        built = cls(prompt="moss", scheduler="unipc", loras=[{"file": LORA}], **required)
        assert built.scheduler == "unipc" and built.loras[0].weight == 1.0
    assert PbrParams(source="inputs/color.png", commercial=True).commercial


@pytest.mark.parametrize("changes, words", [
    ({"scheduler": "k_lms_fancy"}, "scheduler must be one of"),
    ({"loras": [{"file": "inputs/loras/00-x.pt"}]}, ".safetensors"),
    ({"loras": [{"file": "/etc/passwd.safetensors"}]}, "inside the job folder"),
    ({"loras": [{"file": "inputs/../../x.safetensors"}]}, "inside the job folder"),
    ({"loras": [{"file": LORA, "weight": 9.0}]}, "LoRA weight must be between"),
    ({"loras": [{"file": LORA}, {"file": LORA}]}, "once"),
    ({"loras": [{"file": f"inputs/loras/{i:02d}.safetensors"} for i in range(MAX_LORAS + 1)]}, f"at most {MAX_LORAS}"),
    ({"loras": [{"path": LORA}]}, "unknown parameter"),
    ({"reference": "../elsewhere.png"}, "inside the job folder"),
    ({"reference_strength": 1.5}, "reference strength must be between"),
])
def test_bad_options_are_clear_errors(changes, words):
    with pytest.raises(ParamError, match=words.replace(".", r"\.").replace("(", r"\(")):
        TextureParams(prompt="moss", **changes)


def test_weight_zero_loras_are_no_loras():
    params = TextureParams(prompt="moss", loras=[{"file": LORA, "weight": 0.0},
                                                 {"file": "inputs/loras/01-b.safetensors", "weight": -0.5}])
    assert [lora.weight for lora in params.active_loras()] == [-0.5]


def test_every_scheduler_name_is_accepted_and_the_default_is_the_familys():
    for name in SCHEDULERS:
        assert TextureParams(prompt="moss", scheduler=name).scheduler == name
    assert TextureParams(prompt="moss").scheduler == ""


def test_input_paths_keep_the_artists_file_name_but_nothing_that_escapes():
    assert lora_input(3, "Wood Grain v2.safetensors") == "inputs/loras/03-Wood_Grain_v2.safetensors"
    assert lora_input(0, "../../evil.safetensors").startswith("inputs/loras/00-")
    assert "/" not in lora_input(0, "a/b.safetensors").removeprefix("inputs/loras/")
    assert reference_input(".JPG") == "inputs/reference.jpg"
    assert reference_input("/x") == "inputs/reference.png"


def test_command_line_lora_weights():
    assert parse_lora("style.safetensors:0.8")[1] == 0.8
    assert parse_lora("dir/style.safetensors")[1] == 1.0
    assert parse_lora("C:\\loras\\style.safetensors")[1] == 1.0  # a drive colon is no weight
    with pytest.raises(UsageError, match="FILE"):
        parse_lora("style.safetensors:heavy")
