import pytest

from backend.params import MAX_SIZE, ParamError, TextureParams


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
