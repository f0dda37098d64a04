"""A convolutional TensorFlow Lite graph, converted once to safetensors + JSON, run in torch.

``tools/convert_tflite_backbone.py`` reads a ``.tflite`` file shipped by a registry package
(MediaPipe's palm detector, see ``dexwm_ros.core.encoder``) and writes ``graph.json`` (the
operators from the input to one chosen feature tensor, in execution order) and
``graph.safetensors`` (their constant tensors, already in torch layout). This module runs that
graph in NCHW with TensorFlow's padding rules, so the features equal the TFLite interpreter's
(``test/core/test_tflite_graph.py`` checks the operators; ``--check`` of the converter the whole
graph against the TFLite interpreter).

Supported operators: CONV_2D, DEPTHWISE_CONV_2D, ADD, PRELU, MAX_POOL_2D, PAD, RESIZE_BILINEAR
(fused NONE / RELU / RELU6 activations). Anything else is refused at conversion.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

GRAPH_CONFIG = "graph.json"
GRAPH_WEIGHTS = "graph.safetensors"
OPERATORS = ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "PRELU", "MAX_POOL_2D", "PAD",
             "RESIZE_BILINEAR")
ACTIVATIONS = ("NONE", "RELU", "RELU6")


class TFLiteGraphError(ValueError):
    """A converted graph is missing, malformed or does not match its weights."""


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one spatial dimension."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _activate(x: torch.Tensor, name: str) -> torch.Tensor:
    if name == "RELU":
        return F.relu(x)
    if name == "RELU6":
        return F.relu6(x)
    return x


def _same_pads(x: torch.Tensor, kernel, stride, dilation) -> list[tuple[int, int]]:
    """'SAME' (before, after) padding of ``x``'s height and width."""
    return [same_padding(x.shape[-2 + d], kernel[d], stride[d], dilation[d]) for d in (0, 1)]


def _pad(x: torch.Tensor, pads: list[tuple[int, int]], value: float = 0.0) -> torch.Tensor:
    (top, bottom), (left, right) = pads
    return F.pad(x, (left, right, top, bottom), value=value) if any(pads[0] + pads[1]) else x


class TFLiteGraph(nn.Module):
    """The converted operators as one module: ``forward(x)`` maps an NCHW float image batch to
    the NCHW feature tensor the graph was cut at."""

    def __init__(self, config: dict, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.nodes = config["nodes"]
        self.input_id, self.output_id = config["input"], config["output"]
        self.output_channels = int(config["output_channels"])
        self.stride = int(config["output_stride"])
        self.constants = nn.ParameterDict({key: nn.Parameter(value.float(), requires_grad=False)
                                           for key, value in tensors.items()})
        for node in self.nodes:
            if node["op"] not in OPERATORS:
                raise TFLiteGraphError(f"unsupported TFLite operator {node['op']!r}")
            if node.get("activation", "NONE") not in ACTIVATIONS:
                raise TFLiteGraphError(f"unsupported fused activation {node['activation']!r}")
            for name in node.get("constants", {}).values():
                if name not in self.constants:
                    raise TFLiteGraphError(f"graph weights lack tensor {name!r}")

    @classmethod
    def load(cls, directory: str | Path) -> TFLiteGraph:
        """Read ``graph.json`` + ``graph.safetensors`` from ``directory`` (clear errors)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        directory = Path(directory).expanduser()
        config_path, weights_path = directory / GRAPH_CONFIG, directory / GRAPH_WEIGHTS
        for path in (config_path, weights_path):
            if not path.is_file():
                raise TFLiteGraphError(f"converted backbone file {path} not found (run "
                                       f"`make palm-encoder` to convert it)")
        try:
            config = json.loads(config_path.read_text())
            tensors = load_file(weights_path)
        except (json.JSONDecodeError, SafetensorError, OSError) as err:
            raise TFLiteGraphError(f"cannot read the converted backbone in {directory}: {err}") \
                from err
        missing = [k for k in ("nodes", "input", "output", "output_channels", "output_stride")
                   if k not in config]
        if missing:
            raise TFLiteGraphError(f"{config_path} lacks {missing}")
        return cls(config, tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last inside (oneDNN's fast depthwise path on CPU); NCHW out."""
        values = {self.input_id: x.contiguous(memory_format=torch.channels_last)}
        for node in self.nodes:
            values[node["output"]] = self._run(node, [values[i] for i in node["inputs"]])
        return values[self.output_id].contiguous()

    def _run(self, node: dict, inputs: list[torch.Tensor]) -> torch.Tensor:
        op, const = node["op"], {k: self.constants[v] for k, v in node.get("constants", {}).items()}
        activation = node.get("activation", "NONE")
        if op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            weight = const["weight"]
            stride, dilation = tuple(node["stride"]), tuple(node["dilation"])
            x, padding = inputs[0], (0, 0)
            if node["padding"] == "SAME":
                pads = _same_pads(x, weight.shape[-2:], stride, dilation)
                if all(before == after for before, after in pads):  # conv2d pads symmetrically
                    padding = (pads[0][0], pads[1][0])
                else:
                    x = _pad(x, pads)
            groups = x.shape[1] if op == "DEPTHWISE_CONV_2D" else 1
            y = F.conv2d(x, weight, const.get("bias"), stride, padding, dilation, groups)
        elif op == "ADD":
            y = inputs[0] + inputs[1]
        elif op == "PRELU":
            y = F.prelu(inputs[0], const["alpha"])
        elif op == "MAX_POOL_2D":
            kernel, stride = tuple(node["kernel"]), tuple(node["stride"])
            x = inputs[0]
            if node["padding"] == "SAME":
                x = _pad(x, _same_pads(x, kernel, stride, (1, 1)), value=-math.inf)
            y = F.max_pool2d(x, kernel, stride)
        elif op == "PAD":
            (top, bottom), (left, right), (front, back) = node["pads"]
            y = F.pad(inputs[0], (left, right, top, bottom, front, back))
        else:  # RESIZE_BILINEAR: TFLite's size is that of the traced input; keep its scale
            scale = node["scale"]
            size = (inputs[0].shape[-2] * scale[0], inputs[0].shape[-1] * scale[1])
            y = F.interpolate(inputs[0], size=size, mode="bilinear",
                              align_corners=node["align_corners"])
        return _activate(y, activation)
