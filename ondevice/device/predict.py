"""Class predictions from an exported AMR model on the device: numpy and onnxruntime only, never torch.

``rfml export`` stores in the ONNX ``metadata_props`` the class names and ``preprocessing``, a JSON list of steps
from a raw I/Q frame ``[2, L]`` (row 0 = I, row 1 = Q) to the model's input; :class:`Predictor` replays them in
numpy (float64, cast to float32 for the graph). The steps, in the order they are listed:

- ``unit_power``: each frame divided by the root of its mean power (mean over L of I² + Q²);
- ``view`` ``kind``: ``iq`` (as is), ``amp_phase`` (|z|, angle z), ``fft_iq`` / ``fft_amp_phase`` (real/imag or
  |.|/angle of the orthonormal FFT of z = I + jQ, fftshifted so DC is at L // 2);
- ``frame_norm`` ``norm``: each viewed frame divided by the sum of its |values| (``l1``) or their norm (``l2``);
- ``standardize``: channel c mapped to (v - ``mean[c]``) / ``std[c]``;
- ``select_bins``: keep the columns ``bins`` of a frame ``length`` wide;
- ``project``: row c becomes (v[c] - ``mean[c]``) @ ``components[c]`` (``[L, K]``), a PCA.

    python -m ondevice.device predict MODEL.onnx FRAMES.npy [--out PREDICTIONS.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ondevice.device.runner import ort_session

FORMAT_KEY = "ondevice.format"
FORMAT = "ondevice-rfml-classifier/1"
# Frames whose norm is below this are divided by it instead (as in rfml.data.views), so zeros stay zeros.
NORM_EPS = 1e-12
STEP_FIELDS = {
    "unit_power": (),
    "view": ("kind",),
    "frame_norm": ("norm",),
    "standardize": ("mean", "std"),
    "select_bins": ("bins", "length"),
    "project": ("mean", "components", "length"),
}


class ModelPropsError(ValueError):
    """An ONNX file's ``metadata_props`` are missing, of an unknown format, or malformed."""


def _view(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "iq":
        return x
    if kind == "amp_phase":
        return np.stack((np.hypot(x[:, 0], x[:, 1]), np.arctan2(x[:, 1], x[:, 0])), axis=1)
    spectrum = np.fft.fftshift(np.fft.fft(x[:, 0] + 1j * x[:, 1], axis=-1, norm="ortho"), axes=-1)
    if kind == "fft_iq":
        return np.stack((spectrum.real, spectrum.imag), axis=1)
    if kind == "fft_amp_phase":
        return np.stack((np.abs(spectrum), np.angle(spectrum)), axis=1)
    raise ValueError(f"unknown view kind {kind!r}")


def apply_step(x: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    """One preprocessing step on a float64 batch ``[B, 2, W]`` (see the module docstring)."""
    op = step["op"]
    if op == "unit_power":
        power = np.square(x).sum(axis=1, keepdims=True).mean(axis=2, keepdims=True)
        return x / np.maximum(np.sqrt(power), NORM_EPS)
    if op == "view":
        return _view(x, step["kind"])
    if op == "frame_norm":
        if step["norm"] == "l1":
            scale = np.abs(x).sum(axis=(1, 2), keepdims=True)
        elif step["norm"] == "l2":
            scale = np.sqrt(np.square(x).sum(axis=(1, 2), keepdims=True))
        else:
            raise ValueError(f"unknown frame norm {step['norm']!r}")
        return x / np.maximum(scale, NORM_EPS)
    if op == "standardize":
        mean = np.asarray(step["mean"], dtype=np.float64).reshape(1, 2, 1)
        std = np.asarray(step["std"], dtype=np.float64).reshape(1, 2, 1)
        return (x - mean) / std
    if op == "select_bins":
        return x[:, :, np.asarray(step["bins"], dtype=np.int64)]
    if op == "project":
        mean = np.asarray(step["mean"], dtype=np.float64)  # [2, L]
        components = np.asarray(step["components"], dtype=np.float64)  # [2, L, K]
        return np.einsum("bcl,clk->bck", x - mean, components)
    raise ValueError(f"unknown preprocessing op {op!r}")


def _parse_json(path: Path, props: Mapping[str, str], key: str) -> Any:
    if key not in props:
        raise ModelPropsError(f"{path}: metadata_props has no {key!r}; export the model with `rfml export`")
    try:
        return json.loads(props[key])
    except json.JSONDecodeError as err:
        raise ModelPropsError(f"{path}: metadata_props {key!r} is not JSON: {err}") from None


def check_props(path: str | os.PathLike, props: Mapping[str, str]) -> tuple[list[str], int, list[dict[str, Any]]]:
    """The class names, the raw frame length and the preprocessing steps of a trained ``rfml export``.

    Raises:
        ModelPropsError: a prop is missing, of another format version, or not what it should be (the message names
            the file and the field).
    """
    path = Path(path)
    found = props.get(FORMAT_KEY)
    if found is None:
        raise ModelPropsError(
            f"{path}: metadata_props has no {FORMAT_KEY!r}: not an `rfml export` of a trained model, so its "
            "preprocessing and classes are unknown"
        )
    if found != FORMAT:
        raise ModelPropsError(f"{path}: metadata_props {FORMAT_KEY!r} is {found!r}; this reader knows {FORMAT!r}")
    if props.get("trained") != "true":
        raise ModelPropsError(
            f"{path}: metadata_props 'trained' is {props.get('trained')!r}: an untrained export has no classes or "
            "preprocessing; export a `rfml fit` checkpoint (--checkpoint)"
        )
    classes = _parse_json(path, props, "class_names")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise ModelPropsError(f"{path}: metadata_props 'class_names' must be a non-empty JSON list of strings")
    try:
        frame_length = int(props["frame_length"])
    except (KeyError, ValueError):
        raise ModelPropsError(f"{path}: metadata_props 'frame_length' must be an integer") from None
    steps = _parse_json(path, props, "preprocessing")
    if not isinstance(steps, list):
        raise ModelPropsError(f"{path}: metadata_props 'preprocessing' must be a JSON list of steps")
    for i, step in enumerate(steps):
        op = step.get("op") if isinstance(step, dict) else None
        if op not in STEP_FIELDS:
            raise ModelPropsError(
                f"{path}: metadata_props 'preprocessing'[{i}] has op {op!r}; expected one of {sorted(STEP_FIELDS)}"
            )
        missing = [field for field in STEP_FIELDS[op] if field not in step]
        if missing:
            raise ModelPropsError(f"{path}: metadata_props 'preprocessing'[{i}] ({op}) lacks {missing}")
    return classes, frame_length, steps


class Predictor:
    """An exported AMR model loaded once: ``predictor(frames)`` gives ``(class_names, logits)``.

    ``frames`` are raw I/Q frames ``[B, 2, L]`` (or one ``[2, L]``) of the length the model was trained on
    (``frame_length``); they go through the stored preprocessing, then ONNX Runtime.
    """

    def __init__(self, model_path: str | os.PathLike, threads: int = 1) -> None:
        self.path = Path(model_path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such ONNX file")
        self.session = ort_session(self.path, threads=threads)
        self.props: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.class_names, self.frame_length, self.steps = check_props(self.path, self.props)
        self.input_name = self.session.get_inputs()[0].name

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """The model's input (float32) for raw frames ``[B, 2, frame_length]`` or ``[2, frame_length]``."""
        x = np.asarray(frames)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1] != 2 or x.shape[2] != self.frame_length:
            raise ValueError(
                f"frames must be shaped [B, 2, {self.frame_length}] (I/Q rows, the length {self.path} was trained "
                f"on), got {list(np.shape(frames))}"
            )
        if not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"frames must be real floating-point values, got dtype {x.dtype}")
        x = x.astype(np.float64)
        for step in self.steps:
            x = apply_step(x, step)
        return np.ascontiguousarray(x, dtype=np.float32)

    def logits(self, frames: np.ndarray) -> np.ndarray:
        """Logits ``[B, C]`` (float32) for raw frames."""
        return self.session.run(None, {self.input_name: self.preprocess(frames)})[0]

    def __call__(self, frames: np.ndarray) -> tuple[list[str], np.ndarray]:
        return list(self.class_names), self.logits(frames)

    def classes_of(self, frames: np.ndarray) -> list[str]:
        """The predicted class name of each frame."""
        return [self.class_names[i] for i in self.logits(frames).argmax(axis=1)]


def predict(model_path: str | os.PathLike, frames: np.ndarray, threads: int = 1) -> tuple[list[str], np.ndarray]:
    """``(class_names, logits [B, C])`` of an ``rfml export`` for raw I/Q frames ``[B, 2, L]`` (loads the model once
    per call; keep a :class:`Predictor` to predict repeatedly)."""
    return Predictor(model_path, threads=threads)(frames)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ondevice.device predict MODEL.onnx FRAMES.npy``: one line per frame, ``index class``."""
    parser = argparse.ArgumentParser(
        prog="python -m ondevice.device predict",
        description="Classify raw I/Q frames ([B, 2, L] in a .npy) with a model written by `rfml export`.",
    )
    parser.add_argument("model", help="the .onnx file written by `rfml export`")
    parser.add_argument("frames", help="a .npy of raw frames [B, 2, L] (row 0 = I, row 1 = Q)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1)")
    parser.add_argument("--out", help="also write logits and class names to this .npz")
    args = parser.parse_args(argv)
    try:
        predictor = Predictor(args.model, threads=args.threads)
        frames = np.load(args.frames, allow_pickle=False)
        names, logits = predictor(frames)
    except (OSError, ValueError) as err:
        print(f"predict: {err}", file=sys.stderr)
        return 2
    predicted = logits.argmax(axis=1)
    for i, k in enumerate(predicted):
        print(f"{i} {names[k]}")
    if args.out:
        from ondevice.device.runner import atomic_path

        with atomic_path(args.out) as tmp, open(tmp, "wb") as f:
            np.savez(f, logits=logits, predicted=predicted, class_names=np.asarray(names))
        print(f"predictions: {args.out}", file=sys.stderr)
    return 0
