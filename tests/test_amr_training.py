"""Every AMR model trains under the recipe on a generated RadioML 2016 file and on its L1-normalised copy.

Two files in the 2016.10a layout, the same frames in both: (a) as ``rfml.data.write_dataset`` writes them (their
physical scale) and (b) each frame divided by the sum of its complex magnitudes, as the real RadioML 2016 files
ship. The DataModule's default ``norm="rms"`` maps both to the same unit-power input, so a model trained on one
reads the other. Each model trains for a few dozen steps at high SNR (10 to 18 dB) with
``Classifier(..., **RECIPE.module_kwargs())``; a model trains when its mean loss over the last steps is at least
10 % below that over the first steps, and its last feature map (``hint_layer``) is not dead.

Measured on this set-up (seed 0, one thread), last/first loss and zero fraction of the hint layer's output:
clst 0.82 / 0 %, kd_cnn 0.84 / 55 %, kd_mobilenet 0.86 / 50 %, resnet (112 steps) 0.84 / 39 %, the same on
both files. CLDNN, MCLDNN and LSTM2 sit at ln 11 for longer than a unit test can afford, and VT-CNN2's ReLUs
collapse within its first steps (98.5 % of its feature map zero after 10 steps) with either normalisation:
those four are strict expected failures (``xfail``) until their training is fixed, so a fix shows up as XPASS.
Each model runs with its default initialisation (``rfml.models.layers``); the figures above were measured with
PyTorch's, and the four still fail within 10 steps with their defaults now.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

from rfml.data import write_dataset
from rfml.data.module import SignalDataModule
from rfml.data.safe_pickle import load_array_pickle
from rfml.models import available
from rfml.trainers import Classifier
from rfml.trainers.quiet import quiet_lightning
from rfml.trainers.recipe import RECIPE

PER_KEY = 10  # frames per (class, SNR): 8 train per key at split 8:1:1, 440 at 10..18 dB, 14 batches of 32
SNRS = "10:18"
SPLIT = "8:1:1"
BATCH = 32
WINDOW = 4  # steps averaged at the start and at the end of the run
MAX_LOSS_RATIO = 0.90  # last/first mean loss
MAX_ZERO_FRACTION = 0.90  # of the hint layer's output on one batch, in eval mode

# Epochs of 14 steps each: the recipe warms up over the first epoch, then decays to zero at the last step.
# The models that do not train yet run 10 steps (warm-up throughout), to keep the file's time down.
EPOCHS = {"clst": 2, "kd_cnn": 2, "kd_mobilenet": 2, "resnet": 8, "cldnn": 1, "mcldnn": 1, "lstm2": 1, "vtcnn2": 1}
NOT_YET_STEPS = 10

_SLOW = "plateaus at ln 11 for longer than this test's budget (measured under the recipe, batch 32 unless said): "
NOT_YET = {  # measured outside this test, in longer runs
    "vtcnn2": "ReLU collapse under the recipe: 98.5 % of its feature map is zero after 10 steps, 99.7 % after 90, "
    "with norm rms or none (the frames' RMS is ~1 at these SNRs either way); it starts learning after ~80 steps",
    "cldnn": _SLOW + "~1 epoch of 137 batches of 64",
    "mcldnn": _SLOW + "~50 batches",
    "lstm2": _SLOW + "with PyTorch's initialisation no learning in 274 batches of 64 (2 epochs, per_key 200); with "
    "Keras' (its default now) 24 % validation accuracy after 15 epochs of 41 batches, but flat over 10 steps",
}


def _model_param(name: str) -> Any:
    if name not in NOT_YET:
        return name
    return pytest.param(name, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=NOT_YET[name]))


AMR_MODELS = ["clst", "vtcnn2", "resnet", "cldnn", "mcldnn", "lstm2", "kd_cnn", "kd_mobilenet"]


@pytest.fixture(scope="module")
def rml_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"physical": generated 2016.10a file, "l1": the same frames L1-normalised per frame as the real files}``."""
    root = tmp_path_factory.mktemp("amr_training")
    physical = Path(write_dataset("rml2016.10a", root, per_key=PER_KEY, seed=0, progress=False))
    frames = load_array_pickle(str(physical))
    l1 = {
        key: (x / np.abs(x[:, 0] + 1j * x[:, 1]).sum(axis=1)[:, None, None]).astype(np.float32)
        for key, x in frames.items()
    }
    path = root / "RML2016.10a_l1.pkl"
    with open(path, "wb") as handle:
        pickle.dump(l1, handle, protocol=2)
    return {"physical": physical, "l1": path}


def _module(path: Path, norm: str = "rms") -> SignalDataModule:
    dm = SignalDataModule(str(path), snrs=SNRS, split=SPLIT, norm=norm, batch_size=BATCH)
    dm.setup("fit")
    return dm


def test_the_list_covers_every_amr_model() -> None:
    others = {name for name in available() if name.startswith("ism_") or name == "snr_cnn"}
    assert sorted(AMR_MODELS) == sorted(set(available()) - others)
    assert set(EPOCHS) == set(AMR_MODELS)


def test_unit_power_gives_both_files_the_same_input(rml_files: dict[str, Path]) -> None:
    physical, l1 = _module(rml_files["physical"]), _module(rml_files["l1"])
    rows = physical.rows["train"]
    assert torch.equal(rows, l1.rows["train"])  # same labels and SNRs, so the same stratified split
    raw = [torch.cat([b["x"] for b in _module(path, norm="none").loader(rows)]) for path in rml_files.values()]
    scale = float(raw[0].square().mean().sqrt() / raw[1].square().mean().sqrt())
    assert scale > 50, f"the physical frames should be ~L = 128 times the L1-normalised ones in RMS, got {scale:.1f}"
    batches = [list(dm.loader(rows)) for dm in (physical, l1)]
    assert len(batches[0]) == len(batches[1]) == -(-rows.numel() // BATCH)
    for a, b in zip(*batches, strict=True):
        assert torch.equal(a["y"], b["y"]) and torch.equal(a["snr"], b["snr"])
        torch.testing.assert_close(a["x"], b["x"], rtol=0, atol=1e-5)
        power = a["x"].square().sum(dim=1).mean(dim=1)
        torch.testing.assert_close(power, torch.ones_like(power), rtol=0, atol=1e-5)


class LossRecorder(Callback):
    """The training loss of every step."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.losses.append(float(outputs["loss"]))


def train(model: str, dm: SignalDataModule, epochs: int, max_steps: int, root: Path) -> tuple[list[float], float]:
    """Train ``model`` under the recipe; returns the step losses and the zero fraction of its hint layer's output
    on the first training batch (eval mode)."""
    pl.seed_everything(0, verbose=False)
    classifier = Classifier(model, dm.num_classes, dm.length, **RECIPE.module_kwargs())
    recorder = LossRecorder()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        max_steps=max_steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        default_root_dir=root,
    )
    with quiet_lightning():
        trainer.fit(classifier, datamodule=dm)
    outputs: list[torch.Tensor] = []
    hint = classifier.net.get_submodule(classifier.net.hint_layer)
    handle = hint.register_forward_hook(lambda module, args, output: outputs.append(output))
    x = next(iter(dm.loader(dm.rows["train"])))["x"]
    classifier.eval()
    with torch.no_grad():
        classifier(x)
    handle.remove()
    return recorder.losses, float((outputs[0] == 0).float().mean())


@pytest.mark.parametrize("source", ["physical", "l1"])
@pytest.mark.parametrize("model", [_model_param(name) for name in AMR_MODELS])
def test_model_trains_under_the_recipe(model: str, source: str, rml_files: dict[str, Path], tmp_path: Path) -> None:
    dm = _module(rml_files[source])
    max_steps = NOT_YET_STEPS if model in NOT_YET else -1
    losses, zero = train(model, dm, EPOCHS[model], max_steps, tmp_path)
    steps = EPOCHS[model] * -(-dm.rows["train"].numel() // BATCH)
    steps = steps if max_steps < 0 else min(steps, max_steps)
    assert len(losses) == steps and all(np.isfinite(losses)), f"{model}: {len(losses)} losses, expected {steps}"
    first, last = float(np.mean(losses[:WINDOW])), float(np.mean(losses[-WINDOW:]))
    assert zero < MAX_ZERO_FRACTION, (
        f"{model} on {source}: {zero:.1%} of its hint layer's output is exactly zero; "
        f"expected < {MAX_ZERO_FRACTION:.0%}"
    )
    assert last / first <= MAX_LOSS_RATIO, (
        f"{model} on {source}: mean loss over the last {WINDOW} of {steps} steps is {last:.3f}, "
        f"{last / first:.3f} of the first {WINDOW} ({first:.3f}); expected <= {MAX_LOSS_RATIO}"
    )
