"""The converted-TFLite graph runner: TensorFlow padding rules, each operator, loading errors, and
the ``blazepalm`` encoder backend built on it (on small graphs made here)."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from dexwm_ros.core.encoder import EncoderWeightsError, build_encoder
from dexwm_ros.core.tflite_graph import TFLiteGraph, TFLiteGraphError, same_padding


def graph(nodes, constants, output, channels=2, stride=1):
    config = {"nodes": nodes, "input": 0, "output": output, "output_channels": channels,
              "output_stride": stride}
    return TFLiteGraph(config, constants)


def conv(inputs, output, weight, stride=1, padding="SAME", op="CONV_2D", activation="NONE"):
    return {"op": op, "inputs": inputs, "output": output, "stride": [stride, stride],
            "dilation": [1, 1], "padding": padding, "activation": activation,
            "constants": {"weight": weight}}


@pytest.mark.parametrize(("size", "kernel", "stride", "expected"), [
    (6, 3, 2, (0, 1)),  # TensorFlow puts the odd pixel at the end
    (5, 3, 2, (1, 1)),
    (7, 5, 1, (2, 2)),
    (8, 2, 2, (0, 0)),
])
def test_same_padding_follows_tensorflow(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_strided_same_convolution_pads_bottom_right_only():
    weight = torch.randn(2, 3, 3, 3)
    x = torch.randn(1, 3, 6, 6)
    y = graph([conv([0], 1, "w", stride=2)], {"w": weight}, output=1)(x)
    assert y.shape == (1, 2, 3, 3)
    # no padding above or left of the first window: it sees rows and columns 0-2
    expected = torch.einsum("oihw,ihw->o", weight, x[0, :, 0:3, 0:3])
    torch.testing.assert_close(y[0, :, 0, 0], expected)


def test_depthwise_convolution_keeps_channels_apart():
    weight = torch.randn(3, 1, 3, 3)
    x = torch.randn(1, 3, 5, 5)
    g = graph([conv([0], 1, "w", op="DEPTHWISE_CONV_2D")], {"w": weight}, output=1, channels=3)
    y = g(x)
    x2 = x.clone()
    x2[:, 1] += 10.0
    y2 = g(x2)
    torch.testing.assert_close(y[:, [0, 2]], y2[:, [0, 2]])
    assert not torch.allclose(y[:, 1], y2[:, 1])


def test_prelu_add_relu6_pad_and_resize():
    alpha = torch.tensor([0.5, 0.25])
    nodes = [
        {"op": "PRELU", "inputs": [0], "output": 1, "constants": {"alpha": "a"}},
        {"op": "ADD", "inputs": [1, 0], "output": 2, "activation": "RELU6"},
        {"op": "PAD", "inputs": [2], "output": 3, "pads": [[0, 0], [0, 0], [0, 1]]},
        {"op": "RESIZE_BILINEAR", "inputs": [3], "output": 4, "scale": [2, 2],
         "align_corners": False},
    ]
    x = torch.tensor([[-2.0, 4.0], [3.0, -8.0]]).view(1, 2, 1, 2)
    g = graph(nodes, {"a": alpha}, output=4, channels=3)
    y = g(x)
    prelu = torch.where(x >= 0, x, alpha.view(1, 2, 1, 1) * x)
    summed = (prelu + x).clamp(0, 6)
    assert y.shape == (1, 3, 2, 4)
    assert torch.all(y[:, 2] == 0)  # the padded channel
    torch.testing.assert_close(y[:, :2, 0, ::3], summed[:, :, 0])  # the resize keeps the ends


def test_same_max_pool_never_picks_the_padding():
    node = {"op": "MAX_POOL_2D", "inputs": [0], "output": 1, "kernel": [2, 2], "stride": [2, 2],
            "padding": "SAME", "activation": "NONE"}
    x = -torch.arange(1.0, 10.0).view(1, 1, 3, 3)
    y = graph([node], {}, output=1, channels=1)(x)
    assert y.shape == (1, 1, 2, 2)
    assert y.max() < 0  # padded cells are -inf, not 0
    assert float(y[0, 0, 1, 1]) == -9.0


def write_graph(directory, nodes, constants, output, channels, stride):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "graph.json").write_text(json.dumps(
        {"nodes": nodes, "input": 0, "output": output, "output_channels": channels,
         "output_stride": stride}))
    save_file(constants, str(directory / "graph.safetensors"))
    return directory


def test_load_errors_name_the_problem(tmp_path):
    with pytest.raises(TFLiteGraphError, match="make palm-encoder"):
        TFLiteGraph.load(tmp_path / "absent")
    good = write_graph(tmp_path / "g", [conv([0], 1, "w")], {"w": torch.randn(2, 3, 1, 1)}, 1,
                       2, 1)
    TFLiteGraph.load(good)
    (good / "graph.json").write_text("{not json")
    with pytest.raises(TFLiteGraphError, match="cannot read"):
        TFLiteGraph.load(good)
    bad = write_graph(tmp_path / "op", [{"op": "SOFTMAX", "inputs": [0], "output": 1}], {}, 1,
                      2, 1)
    with pytest.raises(TFLiteGraphError, match="unsupported TFLite operator 'SOFTMAX'"):
        TFLiteGraph.load(bad)
    lacking = write_graph(tmp_path / "w", [conv([0], 1, "missing")], {"w": torch.ones(1)}, 1, 2,
                          1)
    with pytest.raises(TFLiteGraphError, match="lack tensor 'missing'"):
        TFLiteGraph.load(lacking)


def test_blazepalm_encoder_takes_the_stride8_map_as_its_grid(tmp_path):
    weight = torch.randn(5, 3, 8, 8) * 0.1
    nodes = [conv([0], 1, "w", stride=8, padding="VALID"),
             {"op": "PRELU", "inputs": [1], "output": 2, "constants": {"alpha": "a"}}]
    directory = write_graph(tmp_path / "palm", nodes, {"w": weight, "a": torch.full((5,), 0.1)},
                            2, 5, 8)
    encoder = build_encoder("blazepalm", directory, pool=4)
    assert encoder.name == "blazepalm_pool4" and encoder.dim == 5
    assert encoder.image_size == (128, 224) and encoder.grid == (4, 7)
    assert encoder.preprocessing["mean"] == [0.0] * 3 and encoder.preprocessing["std"] == [1.0] * 3
    images = np.random.default_rng(0).integers(0, 256, (2, 128, 224, 3), dtype=np.uint8)
    tokens = encoder.encode(images)
    assert tokens.shape == (2, 28, 5)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    features = torch.nn.functional.conv2d(pixels, weight, stride=8)
    features = torch.where(features >= 0, features, 0.1 * features)
    expected = torch.nn.functional.avg_pool2d(features, 4).flatten(2).transpose(1, 2)
    torch.testing.assert_close(tokens, expected, rtol=1e-4, atol=1e-5)


def test_blazepalm_encoder_needs_its_converted_weights(tmp_path):
    with pytest.raises(EncoderWeightsError, match="needs weights"):
        build_encoder("blazepalm")
    with pytest.raises(EncoderWeightsError, match="not found"):
        build_encoder("blazepalm", tmp_path / "nowhere")
    coarse = write_graph(tmp_path / "s16", [conv([0], 1, "w", stride=16, padding="VALID")],
                         {"w": torch.randn(2, 3, 16, 16)}, 1, 2, 16)
    with pytest.raises(EncoderWeightsError, match="stride 16"):
        build_encoder("blazepalm", coarse)
