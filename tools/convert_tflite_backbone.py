#!/usr/bin/env python3
"""Convert the feature trunk of a TFLite model shipped in a registry package to safetensors.

Default: MediaPipe's palm detector (``palm_detection_full.tflite``, Apache-2.0), which the
``mediapipe`` wheel up to 0.10.x ships as a file; the wheel is fetched from the package index
with ``pip download`` (the one network step, at set-up), the ``.tflite`` read with the ``tflite``
flatbuffer parser, and the operators from the image to the input of the stride-8 palm
classifier's feature pyramid (the backbone's stride-8 stage, 128 channels; ``--layer``) written as
``graph.json`` + ``graph.safetensors`` for ``dexwm_ros.core.tflite_graph``. The fp16 weights are
widened to float32 exactly as the model's own DEQUANTIZE operators do. ``--check`` compares the
torch graph with the TFLite interpreter (``ai-edge-litert``, when installed) on random images.

    tools/convert_tflite_backbone.py --out models/encoders/blazepalm
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MEDIAPIPE_WHEEL = "mediapipe==0.10.14"
MEMBER = "mediapipe/modules/palm_detection/palm_detection_full.tflite"
#: The feature layer (a PRELU activation): the last of the backbone's stride-8 stage (128
#: channels), before the feature pyramid mixes in the coarser levels. Measured against the
#: pyramid's stride-8 output (p_re_lu_30) and stride-16 output (p_re_lu_27) with
#: benchmarks/goal_ranking.py, it ranks hand poses best (see the encoder docstring).
LAYER = "p_re_lu_14"


def fetch_tflite(work: Path) -> Path:
    """Download the mediapipe wheel (no dependencies) and extract the palm detector."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(work),
                    MEDIAPIPE_WHEEL], check=True)
    wheels = sorted(work.glob("mediapipe-*.whl"))
    if not wheels:
        raise SystemExit(f"pip download {MEDIAPIPE_WHEEL} produced no wheel in {work}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        if MEMBER not in wheel.namelist():
            raise SystemExit(f"{wheels[0].name} does not contain {MEMBER}")
        return Path(wheel.extract(MEMBER, work))


def _enum_names(enum) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def convert(tflite_path: Path, layer: str = LAYER) -> tuple[dict, dict[str, np.ndarray]]:
    """The graph config and its constants (torch layout) of the trunk of ``tflite_path`` up to
    the output of the operator named ``layer``."""
    import tflite

    model = tflite.Model.GetRootAsModel(tflite_path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    op_names = _enum_names(tflite.BuiltinOperator)
    activations = _enum_names(tflite.ActivationFunctionType)
    paddings = _enum_names(tflite.Padding)
    np_types = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.FLOAT16: np.float16,
                tflite.TensorType.INT32: np.int32}

    def constant(index: int) -> np.ndarray | None:
        tensor = graph.Tensors(index)
        data = model.Buffers(tensor.Buffer()).DataAsNumpy()
        if isinstance(data, int) or data is None or len(data) == 0:
            return None
        shape = tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []
        return np.frombuffer(data.tobytes(), dtype=np_types[tensor.Type()]).reshape(shape)

    operators = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        name = op_names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
        operators.append((name, op, [op.Inputs(j) for j in range(op.InputsLength())],
                          [op.Outputs(j) for j in range(op.OutputsLength())]))

    dequantized: dict[int, np.ndarray] = {}
    for name, _op, inputs, outputs in operators:
        if name == "DEQUANTIZE":
            dequantized[outputs[0]] = constant(inputs[0]).astype(np.float32)

    cut = [outs[0] for name, _op, _ins, outs in operators
           if name == "PRELU" and f"/{layer}/" in graph.Tensors(outs[0]).Name().decode()]
    if len(cut) != 1:
        raise SystemExit(f"{tflite_path}: expected one PRELU activation named {layer!r}, found "
                         f"{len(cut)}")
    output_id = cut[0]
    producers = {outs[0]: k for k, (_n, _o, _i, outs) in enumerate(operators)}
    needed, stack = set(), [output_id]
    while stack:  # operators the output depends on
        tensor = stack.pop()
        if tensor in producers and producers[tensor] not in needed:
            needed.add(producers[tensor])
            stack.extend(operators[producers[tensor]][2])

    def value(index: int) -> np.ndarray | None:
        return dequantized.get(index, constant(index) if index >= 0 else None)

    nodes, tensors = [], {}

    def keep(array: np.ndarray) -> str:
        key = f"c{len(tensors)}"
        tensors[key] = np.ascontiguousarray(array, dtype=np.float32)
        return key

    for k in sorted(needed):
        name, op, inputs, outputs = operators[k]
        if name == "DEQUANTIZE":
            continue
        node = {"op": name, "output": outputs[0]}
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            options = (tflite.Conv2DOptions() if name == "CONV_2D"
                       else tflite.DepthwiseConv2DOptions())
            options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            weight = value(inputs[1])  # OHWI (conv) or 1HW(C*m) (depthwise)
            weight = (weight.transpose(0, 3, 1, 2) if name == "CONV_2D"
                      else weight.transpose(3, 0, 1, 2))
            node.update(inputs=[inputs[0]], stride=[options.StrideH(), options.StrideW()],
                        dilation=[options.DilationHFactor(), options.DilationWFactor()],
                        padding=paddings[options.Padding()],
                        activation=activations[options.FusedActivationFunction()],
                        constants={"weight": keep(weight)})
            if len(inputs) > 2 and inputs[2] >= 0:
                node["constants"]["bias"] = keep(value(inputs[2]))
        elif name == "ADD":
            options = tflite.AddOptions()
            options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            node.update(inputs=inputs, activation=activations[options.FusedActivationFunction()])
        elif name == "PRELU":
            node.update(inputs=[inputs[0]], constants={"alpha": keep(value(inputs[1]).ravel())})
        elif name == "MAX_POOL_2D":
            options = tflite.Pool2DOptions()
            options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            node.update(inputs=[inputs[0]], kernel=[options.FilterHeight(), options.FilterWidth()],
                        stride=[options.StrideH(), options.StrideW()],
                        padding=paddings[options.Padding()],
                        activation=activations[options.FusedActivationFunction()])
        elif name == "PAD":
            pads = value(inputs[1]).tolist()  # NHWC (before, after)
            if pads[0] != [0, 0]:
                raise SystemExit(f"{tflite_path}: PAD over the batch is not supported")
            node.update(inputs=[inputs[0]], pads=[pads[1], pads[2], pads[3]])
        elif name == "RESIZE_BILINEAR":
            options = tflite.ResizeBilinearOptions()
            options.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
            source = graph.Tensors(inputs[0]).ShapeAsNumpy()[1:3]
            size = value(inputs[1]).tolist()
            if options.AlignCorners() or not options.HalfPixelCenters():
                raise SystemExit(f"{tflite_path}: only half-pixel-centre bilinear resizing is "
                                 f"supported")
            node.update(inputs=[inputs[0]], scale=[size[0] // int(source[0]),
                                                   size[1] // int(source[1])],
                        align_corners=False)
        else:
            raise SystemExit(f"{tflite_path}: operator {name} is not supported")
        nodes.append(node)
    output_shape = graph.Tensors(output_id).ShapeAsNumpy()
    input_height = int(graph.Tensors(graph.Inputs(0)).ShapeAsNumpy()[1])
    config = {"source": f"{MEDIAPIPE_WHEEL}:{MEMBER}", "layer": layer,
              "input": graph.Inputs(0), "output": output_id,
              "output_channels": int(output_shape[-1]),
              "output_stride": input_height // int(output_shape[1]), "input_range": [0.0, 1.0],
              "nodes": nodes}
    return config, tensors


def check(tflite_path: Path, out: Path) -> float:
    """Largest |torch - TFLite| over two random images at the model's own input size."""
    import torch
    from ai_edge_litert.interpreter import Interpreter

    from dexwm_ros.core.tflite_graph import TFLiteGraph

    graph = TFLiteGraph.load(out).eval()
    interpreter = Interpreter(model_path=str(tflite_path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    worst = 0.0
    for seed in (0, 1):
        image = np.random.default_rng(seed).random(detail["shape"], dtype=np.float32)
        interpreter.set_tensor(detail["index"], image)
        interpreter.invoke()
        expected = interpreter.get_tensor(graph.output_id)
        with torch.inference_mode():
            got = graph(torch.from_numpy(image).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
        worst = max(worst, float(np.abs(got - expected).max() / (np.abs(expected).max() + 1e-9)))
    return worst


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--tflite", type=Path, default=None,
                        help="a local palm_detection_full.tflite (default: pip download "
                             f"{MEDIAPIPE_WHEEL} and extract it)")
    parser.add_argument("--layer", default=LAYER,
                        help="the PRELU activation whose output is the feature map (default: "
                             "the backbone's stride-8 stage)")
    parser.add_argument("--check", action="store_true",
                        help="compare with the TFLite interpreter (needs ai-edge-litert)")
    args = parser.parse_args(argv)
    from safetensors.numpy import save_file

    with tempfile.TemporaryDirectory() as work:
        tflite_path = args.tflite or fetch_tflite(Path(work))
        config, tensors = convert(tflite_path, args.layer)
        args.out.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(args.out / "graph.safetensors"))
        (args.out / "graph.json").write_text(json.dumps(config, indent=1))
        print(f"{args.out}: {len(config['nodes'])} operators, {len(tensors)} tensors, layer "
              f"{args.layer} ({config['output_channels']} channels, stride "
              f"{config['output_stride']})")
        if args.check:
            print(f"max relative difference to the TFLite interpreter: "
                  f"{check(tflite_path, args.out):.2e}")


if __name__ == "__main__":
    main()
