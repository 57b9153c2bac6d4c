import pytest

from contract.tasks import MAX_SIZE, ParamError, TextureParams


def test_defaults_are_valid_and_round_trip():
    params = TextureParams(prompt="brick wall")
    assert TextureParams.from_dict(params.to_dict()) == params


@pytest.mark.parametrize("changes, message", [
    ({"prompt": "  "}, "prompt is empty"),
    ({"width": 500}, "width must be a multiple of 8"),
    ({"height": MAX_SIZE + 8}, "height must be a multiple of 8 between 64 and 2048"),
    ({"width": 32}, "width"),
    ({"steps": 0}, "steps"),
    ({"guidance": -1.0}, "guidance"),
    ({"seed": -2}, "seed"),
])
def test_out_of_range_values_name_the_parameter(changes, message):
    with pytest.raises(ParamError, match=message):
        TextureParams(**{"prompt": "x", **changes})


def test_from_dict_rejects_unknown_and_mistyped_fields():
    with pytest.raises(ParamError, match="unknown parameter"):
        TextureParams.from_dict({"prompt": "x", "colour": "red"})
    with pytest.raises(ParamError, match="width must be int"):
        TextureParams.from_dict({"prompt": "x", "width": "512"})
    with pytest.raises(ParamError, match="seamless_x must be bool"):
        TextureParams.from_dict({"prompt": "x", "seamless_x": 1})
    with pytest.raises(ParamError, match="prompt"):
        TextureParams.from_dict({})
    assert TextureParams.from_dict({"prompt": "x", "guidance": 5}).guidance == 5.0


def _render(**changes):
    from contract.tasks import RenderParams

    base = {"prompt": "a house", "controls": [{"kind": "depth", "weight": 1.0}]}
    return RenderParams(**{**base, **changes})


def test_render_params_controls_and_bounds():
    params = _render(controls=[{"kind": "depth", "weight": 1.0}, {"kind": "canny", "weight": 0.0},
                               {"kind": "normal", "weight": 0.5, "start": 0.2, "end": 0.8}])
    assert [c.kind for c in params.active_controls()] == ["depth", "normal"]  # weight 0 is off
    from contract.tasks import RenderParams

    assert RenderParams.from_dict(params.to_dict()) == params


@pytest.mark.parametrize("changes, message", [
    ({"controls": [{"kind": "depth", "weight": 0.0}]}, "all control weights are zero"),
    ({"controls": []}, "all control weights are zero"),
    ({"controls": [{"kind": "heat", "weight": 1.0}]}, "control must be one of depth, normal, canny"),
    ({"controls": [{"kind": "depth", "weight": 3.0}]}, "depth weight must be between 0 and 2"),
    ({"controls": [{"kind": "depth", "start": 0.6, "end": 0.4}]}, "start and end"),
    ({"controls": [{"kind": "depth"}, {"kind": "depth"}]}, "each control may appear once"),
    ({"controls": "depth"}, "controls must be a list"),
    ({"width": 4096}, "width must be a multiple of 8"),
    ({"canny_low": 200, "canny_high": 100}, "canny thresholds"),
    ({"canny_high": 5000}, "canny thresholds"),
    ({"strength": 0.0}, "strength"),
    ({"passes": "../elsewhere.exr"}, "inside the job folder"),
])
def test_render_params_refusals(changes, message):
    with pytest.raises(ParamError, match=message):
        _render(**changes)
