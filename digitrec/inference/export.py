"""Export a trained network for deployment: TorchScript and ONNX, preprocessing constants baked in.

    digitrec-export --checkpoint outputs/<run>/checkpoints/cnn-best.ckpt [--output-dir DIR]

writes `<model>.torchscript.pt` and `<model>.onnx`; with `--checkpoint` repeated, one graph holding every
member of the ensemble (`ensemble-<n>-<key>.*`: the mean of their calibrated probabilities). Both take `pixels`, float32 (N, 1, 28, 28)
in [0, 1], light digit on dark (the output of `digitrec.inference.preprocess.mnist_style`), and return
`probabilities` (N, 10): normalisation with the training mean and standard deviation, and the
calibrated temperature when the run has one, are inside the graph. The geometric preprocessing
(polarity, crop, resize, centring) is not: run `digitrec.inference.preprocess` (or the same steps) first.
Each file carries its description as JSON (`digitrec.json` extra file / ONNX metadata).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from digitrec.data.mnist import IMAGE_SIZE, MNIST_MEAN, MNIST_STD, NUM_CLASSES
from digitrec.errors import ConfigError, DigitrecError, exit_on_user_error
from digitrec.inference.checkpoints import load_temperature, run_dir_of
from digitrec.inference.ensemble import load_scorer, members_key, scorer_name
from digitrec.inference.options import add_model_options, choose_model

FORMATS = ("torchscript", "onnx")
PARITY_TOLERANCE = 1e-4  # largest difference in probability allowed between an export and the checkpoint
METADATA_KEY = "digitrec.json"


class ProbabilityNet(nn.Module):
    """Pixels in [0, 1], (N, 1, 28, 28) → calibrated class probabilities (N, 10)."""

    def __init__(self, net: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.net = net.eval()
        self.register_buffer("mean", torch.tensor(MNIST_MEAN))
        self.register_buffer("std", torch.tensor(MNIST_STD))
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((pixels - self.mean) / self.std) / self.temperature, dim=1)


def metadata(
    model_name: str, checkpoints: Sequence[Path], temperature: float, temperature_source: str, tta: bool = False
) -> dict[str, Any]:
    return {
        "model": model_name,
        "checkpoint": str(checkpoints[0]) if len(checkpoints) == 1 else [str(c) for c in checkpoints],
        "tta": tta,
        "input": {
            "name": "pixels",
            "shape": ["N", 1, IMAGE_SIZE, IMAGE_SIZE],
            "dtype": "float32",
            "range": [0.0, 1.0],
            "layout": "light digit on dark, MNIST-style (digitrec.inference.preprocess)",
        },
        "output": {"name": "probabilities", "shape": ["N", NUM_CLASSES], "classes": list(range(NUM_CLASSES))},
        "mnist_mean": MNIST_MEAN,
        "mnist_std": MNIST_STD,
        "temperature": temperature,
        "temperature_source": temperature_source,
    }


def export_torchscript(model: ProbabilityNet, path: Path, info: dict[str, Any]) -> Path:
    example = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    with warnings.catch_warnings():  # TorchScript is deprecated upstream but still what many runtimes load
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(path), _extra_files={METADATA_KEY: json.dumps(info)})
    return path


def export_onnx(model: ProbabilityNet, path: Path, info: dict[str, Any]) -> Path:
    try:
        import onnx
    except ImportError:
        raise ConfigError(
            "ONNX export needs the onnx and onnxscript packages: pip install 'digitrec[export]'."
        ) from None
    example = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["pixels"],
        output_names=["probabilities"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
        verbose=False,
    )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info)
    onnx.save(proto, str(path))
    return path


def _as_list(checkpoint: str | Path | Sequence[str | Path]) -> list[Path]:
    return [Path(checkpoint)] if isinstance(checkpoint, (str, Path)) else [Path(c) for c in checkpoint]


def export(
    checkpoint: str | Path | Sequence[str | Path],
    output_dir: str | Path | None = None,
    formats: Sequence[str] = FORMATS,
    tta: bool = False,
) -> dict[str, Path]:
    """Write the checkpoint's network (or the ensemble of several, with `tta` its TTA views too) in
    each format; return {format: path}."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}.")
    checkpoints = _as_list(checkpoint)
    net, temperature, names, sources = load_scorer(checkpoints, "cpu", tta)
    model = ProbabilityNet(net, temperature).eval()
    single = len(checkpoints) == 1
    name = (
        names[0] + ("-tta" if tta else "") if single else f"ensemble-{members_key(checkpoints)}{'-tta' if tta else ''}"
    )
    out = Path(output_dir) if output_dir is not None else default_output_dir(checkpoints)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir={out} is a file; give a folder.")
    out.mkdir(parents=True, exist_ok=True)
    info = metadata(scorer_name(names), checkpoints, temperature, "; ".join(sources), tta)
    writers = {"torchscript": (export_torchscript, f"{name}.torchscript.pt"), "onnx": (export_onnx, f"{name}.onnx")}
    return {fmt: writers[fmt][0](model, out / writers[fmt][1], info) for fmt in formats}


def default_output_dir(checkpoints: Sequence[Path]) -> Path:
    """`<run>/export` for a checkpoint in a run's `checkpoints/` folder, else `export/` next to it;
    for an ensemble, `export/` in the folder that holds all its runs."""
    return Path(os.path.commonpath([run_dir_of(Path(c).resolve()) for c in checkpoints])) / "export"


def run_exported(path: Path, pixels: np.ndarray) -> np.ndarray:
    """Probabilities from an exported file (TorchScript by torch, ONNX by onnxruntime) for (N, 1, 28, 28) pixels."""
    if path.suffix == ".onnx":
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError("Checking an ONNX export needs onnxruntime: pip install 'digitrec[export]'.") from None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"pixels": pixels.astype(np.float32)})[0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        scripted = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return scripted(torch.from_numpy(pixels.astype(np.float32))).numpy()


def check_parity(
    checkpoint: Path | Sequence[Path], files: dict[str, Path], pixels: np.ndarray, tta: bool = False
) -> dict[str, float]:
    """Largest absolute difference in probability between each export and the checkpoint(s)."""
    net, temperature, _, _ = load_scorer(_as_list(checkpoint), "cpu", tta)
    with torch.inference_mode():
        expected = ProbabilityNet(net, temperature)(torch.from_numpy(pixels)).double().numpy()
    return {fmt: float(np.abs(run_exported(path, pixels) - expected).max()) for fmt, path in files.items()}


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="digitrec-export", description=__doc__.split("\n\n")[0])
    add_model_options(parser)
    parser.add_argument("--output-dir", type=Path, default=None, help="default: <run>/export")
    parser.add_argument(
        "--format",
        nargs="+",
        choices=FORMATS,
        default=list(FORMATS),
        dest="formats",
        help="one or both of: torchscript, onnx (default: both)",
    )
    args = parser.parse_args(argv)
    checkpoints, which = choose_model(args.checkpoint)
    for checkpoint in checkpoints:
        if load_temperature(checkpoint)[1].startswith("uncalibrated"):
            print(
                f"note: {checkpoint} is not calibrated: the exports use temperature 1 (python evaluate.py "
                f"ckpt_path={checkpoint} fits one).",
                file=sys.stderr,
            )
    files = export(checkpoints, args.output_dir, args.formats, args.tta)
    print(which, file=sys.stderr)
    pixels = np.random.default_rng(0).random((8, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    differences = check_parity(checkpoints, files, pixels, args.tta)
    for fmt, path in files.items():
        print(f"{fmt}: {path} (largest probability difference from the checkpoint: {differences[fmt]:.1e})")
    failed = [fmt for fmt, diff in differences.items() if not diff <= PARITY_TOLERANCE]
    if failed:
        raise DigitrecError(
            f"the {', '.join(failed)} export differs from the checkpoint by more than "
            f"{PARITY_TOLERANCE:g}; please report this with the model name."
        )
    return 0
