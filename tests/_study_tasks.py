"""Top-level task functions for tests/test_study_executor.py, importable by spawned worker processes; the SNR
study's toy data set."""

from __future__ import annotations

import os
import time
from typing import Any

import torch


def worker_info(item: dict[str, Any]) -> dict[str, Any]:
    """The worker's pid and torch thread count, and the item's value doubled; sleeps so tasks overlap."""
    time.sleep(item.get("sleep", 0.0))
    return {"pid": os.getpid(), "threads": torch.get_num_threads(), "double": 2 * item["x"]}


def seeded_values(item: dict[str, Any]) -> dict[str, Any]:
    """A deterministic torch computation from the item's seed, with the task's torch thread count."""
    generator = torch.Generator().manual_seed(item["seed"])
    x = torch.randn(16, 16, generator=generator, dtype=torch.float64)
    gram = x @ x.T
    return {
        "diag": [round(v, 9) for v in gram.diagonal().tolist()],
        "first": x[0, :4].tolist(),
        "threads": torch.get_num_threads(),
    }


def maybe_fail(item: dict[str, Any]) -> int:
    """``item["x"]``; raises ValueError for an item with ``fail``, SystemExit (as Lightning's SIGTERM handler does)
    for one with ``exit``, after ``sleep`` seconds for the others."""
    if item.get("fail"):
        raise ValueError(f"bad item {item['x']}")
    if item.get("exit"):
        raise SystemExit(item["exit"])
    time.sleep(item.get("sleep", 0.0))
    return item["x"]


# -- a crafted two-SNR set for the SNR-study tests ------------------------------------------------------------------

TOY_CLASSES = ("phase0", "phase90", "phase180", "phase270")


def write_toy_rml(path: str, per_key: int = 20, length: int = 32, seed: int = 0) -> str:
    """A RadioML 2016-layout pickle with SNRs 0 and 10: at 10 dB class k is an unmodulated carrier at phase k·90° in
    weak noise (trivial to learn); at 0 dB every frame is pure noise, whatever its label, so training there teaches
    nothing."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    data = {}
    for k, name in enumerate(TOY_CLASSES):
        for snr in (0, 10):
            noise = rng.normal(size=(per_key, 2, length)) * np.sqrt(0.5)
            if snr == 10:
                carrier = np.array([np.cos(k * np.pi / 2), np.sin(k * np.pi / 2)])[None, :, None]
                frames = carrier + noise * np.sqrt(10 ** (-snr / 10))
            else:
                frames = noise
            data[(name, snr)] = frames.astype(np.float32)
    with open(path, "wb") as handle:
        pickle.dump(data, handle, protocol=2)
    return path


def toy_config(data_path: str, **overrides: Any) -> dict[str, Any]:
    """Study settings for the toy set: a one-stack 8-channel ResNet, a few optimizer steps per training."""
    config: dict[str, Any] = {
        "data": {"dataset": data_path, "per_key": None, "split": "6:2:2", "view": "iq", "batch_size": 16},
        "train": {
            "model": "resnet",
            "model_kwargs": {"num_stacks": 1, "channels": 8, "hidden": 16},
            "lr": 0.01,
            "max_epochs": 1,
            "patience": 1,
            "min_steps": 25,
        },
        "estimator": {
            "model": "snr_cnn",
            "model_kwargs": {"widths": [8, 8, 8, 8], "hidden": 8},
            "lr": 0.01,
            "max_epochs": 1,
            "patience": 1,
            "min_steps": 10,
        },
        "targets": [0, 10],
        "boost": {"holdout": 0.25, "min_gain": 0.01},
        "bag": {"models": 3, "spread_db": 10, "fractions": [0.5]},
        "router": {"bias_db": [0.0, 1.0]},
    }
    config.update(overrides)
    return config
