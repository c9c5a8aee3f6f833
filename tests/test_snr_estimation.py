"""Blind SNR estimation: M2M4 against AWGN at known SNRs, grid rounding, error tables, SNR-CNN and SNRRegressor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from rfml.data import SignalDataModule
from rfml.dsp.snr import estimation_errors, m2m4, overall_errors, round_to_grid
from rfml.models import create
from rfml.models.snr_cnn import SNRCNN
from rfml.trainers.cli import lightning_main
from rfml.trainers.snr_regressor import SNRRegressor

CONFIG = Path(__file__).resolve().parents[1] / "rfml" / "configs" / "snr_cnn.yaml"


def qpsk_in_awgn(frames: int, length: int, snr_db: float, seed: int = 0) -> torch.Tensor:
    """Unit-power QPSK symbols (one sample each) plus complex white Gaussian noise of power 10^(−snr/10): [B, 2, L]."""
    g = torch.Generator().manual_seed(seed)
    symbols = torch.randint(0, 4, (frames, length), generator=g)
    phase = math.pi / 4 + math.pi / 2 * symbols.double()
    sigma = math.sqrt(10 ** (-snr_db / 10) / 2)  # per real component
    i = torch.cos(phase) + sigma * torch.randn(frames, length, generator=g, dtype=torch.float64)
    q = torch.sin(phase) + sigma * torch.randn(frames, length, generator=g, dtype=torch.float64)
    return torch.stack([i, q], dim=1).float()


# --- M2M4 ------------------------------------------------------------------------------------------------------


def test_m2m4_mean_estimate_of_qpsk_at_10db_is_within_half_a_db() -> None:
    estimates = m2m4(qpsk_in_awgn(200, 1024, 10.0))
    assert estimates.shape == (200,) and estimates.dtype == torch.float32
    # Measured over seeds 0-4: mean 9.98…10.03 dB, per-frame std 0.22…0.25 dB.
    assert abs(float(estimates.mean()) - 10.0) < 0.5
    assert float(estimates.std()) < 0.4


# Measured over seeds 0-4 (200 frames of 1,024 samples): at 0 dB mean −0.08…+0.02 dB, per-frame std 0.71…0.80 dB
# (standard error of the mean ≈ 0.055 dB); at 20 dB mean 20.00…20.02 dB, std 0.18…0.20 dB (s.e. ≈ 0.014 dB). Each
# tolerance is about five standard errors plus the largest offset seen, so it fails on a real bias, not on chance.
@pytest.mark.parametrize(("snr_db", "tolerance_db"), [(0.0, 0.3), (20.0, 0.1)])
def test_m2m4_is_unbiased_for_qpsk_at_low_and_high_snr(snr_db: float, tolerance_db: float) -> None:
    estimates = m2m4(qpsk_in_awgn(200, 1024, snr_db, seed=1))
    assert abs(float(estimates.mean()) - snr_db) < tolerance_db


def test_m2m4_ignores_the_frames_scale_and_takes_complex_frames() -> None:
    x = qpsk_in_awgn(16, 1024, 5.0)
    torch.testing.assert_close(m2m4(7.0 * x), m2m4(x), atol=1e-4, rtol=0)
    torch.testing.assert_close(m2m4(torch.complex(x[:, 0], x[:, 1])), m2m4(x), atol=1e-5, rtol=0)


def test_m2m4_degenerate_frames_take_the_floor_or_the_ceiling() -> None:
    noiseless = qpsk_in_awgn(1, 256, 300.0)  # noise 10^-15 of the signal: the moments see none
    silent = torch.zeros(1, 2, 256)
    frames = torch.cat([noiseless, silent])
    assert m2m4(frames).tolist() == [50.0, -30.0]
    assert m2m4(frames, floor_db=-12.0, ceil_db=33.0).tolist() == [33.0, -12.0]
    # Estimates are clamped into [floor, ceil] as well: a 10 dB frame under a ceiling of 4 dB reads 4 dB.
    assert m2m4(qpsk_in_awgn(1, 1024, 10.0), ceil_db=4.0).tolist() == [4.0]


def test_m2m4_refuses_bad_shapes_and_limits() -> None:
    with pytest.raises(ValueError, match=r"real x must be \[B, 2, L\].*got shape \[4, 3, 16\]"):
        m2m4(torch.zeros(4, 3, 16))
    with pytest.raises(ValueError, match=r"complex x must be \[B, L\].*got shape \[4, 2, 16\]"):
        m2m4(torch.zeros(4, 2, 16, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"floating-point samples, got dtype torch\.int64"):
        m2m4(torch.zeros(4, 2, 16, dtype=torch.int64))
    with pytest.raises(ValueError, match="floor_db must be below ceil_db, got floor_db=10 and ceil_db=10"):
        m2m4(torch.zeros(4, 2, 16), floor_db=10, ceil_db=10)


# --- grid rounding -------------------------------------------------------------------------------------------------


def test_round_to_grid_picks_the_nearest_with_ties_up_and_clamps() -> None:
    grid = [-4, -2, 0, 2, 4]
    snr = torch.tensor([-3.1, -2.9, -1.0, 0.9, 1.0, 3.0, 100.0, -100.0])
    index = round_to_grid(snr, grid)
    assert index.dtype == torch.int64
    assert index.tolist() == [0, 1, 2, 2, 3, 4, 4, 0]


def test_round_to_grid_adds_the_optimistic_bias_first() -> None:
    snr = torch.tensor([[-3.1, 0.0], [2.4, 3.5]])
    index = round_to_grid(snr, torch.tensor([-4, -2, 0, 2, 4]), bias_db=1.5)
    # -1.6 → -2, 1.5 → 2, 3.9 → 4, 5.0 → 4 (clamped)
    assert index.tolist() == [[1, 3], [4, 4]]
    assert round_to_grid(torch.tensor([17.0, -25.0]), range(-20, 20, 2), bias_db=2.0).tolist() == [19, 0]
    assert round_to_grid(torch.tensor([-9.0, 9.0]), [6]).tolist() == [0, 0]


def test_round_to_grid_refuses_an_unsorted_or_empty_grid() -> None:
    with pytest.raises(ValueError, match=r"strictly ascending, got \[0.0, -2.0, 2.0\]"):
        round_to_grid(torch.tensor([0.0]), [0, -2, 2])
    with pytest.raises(ValueError, match="strictly ascending"):
        round_to_grid(torch.tensor([0.0]), [0, 0, 2])
    with pytest.raises(ValueError, match="empty grid"):
        round_to_grid(torch.tensor([0.0]), [])
    with pytest.raises(ValueError, match="snr_db must be finite"):
        round_to_grid(torch.tensor([math.nan]), [0, 2])


# --- error tables --------------------------------------------------------------------------------------------------


def test_estimation_errors_per_snr_match_a_hand_computation() -> None:
    estimated = torch.tensor([1.0, -1.0, 3.0, 10.0, 14.0])
    true = torch.tensor([0, 0, 0, 10, 10])
    table = estimation_errors(estimated, true)
    assert list(table) == [0, 10]
    assert table[0] == pytest.approx({"mae": 5 / 3, "bias": 1.0, "rmse": math.sqrt(11 / 3), "count": 3})
    assert table[10] == pytest.approx({"mae": 2.0, "bias": 2.0, "rmse": math.sqrt(8), "count": 2})
    assert overall_errors(estimated, true) == pytest.approx(
        {"mae": 9 / 5, "bias": 7 / 5, "rmse": math.sqrt(27 / 5), "count": 5}
    )
    assert json.loads(json.dumps(table))["0"]["count"] == 3


def test_estimation_errors_refuse_mismatched_or_fractional_truths() -> None:
    with pytest.raises(ValueError, match=r"same shape, got \[3\] and \[2\]"):
        estimation_errors(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="whole dB"):
        estimation_errors(torch.zeros(2), torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="no estimates"):
        overall_errors(torch.zeros(0), torch.zeros(0))


# --- SNR-CNN ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [16, 17, 128, 1024])
def test_snr_cnn_maps_frames_of_any_length_to_its_outputs(length: int) -> None:
    model = create("snr_cnn", 20, length).eval()
    assert isinstance(model, SNRCNN)
    with torch.no_grad():
        assert model(torch.randn(3, 2, length)).shape == (3, 20)
        assert SNRCNN(1, length).eval()(torch.randn(3, 2, length)).shape == (3, 1)


def test_snr_cnn_size_is_the_documented_one() -> None:
    params = sum(p.numel() for p in SNRCNN(num_classes=1).parameters())
    assert params == 34_497
    assert f"{params:,}" in SNRCNN.__doc__


def test_snr_cnn_ignores_the_frames_scale() -> None:
    model = SNRCNN(1).eval()
    x = torch.randn(4, 2, 128)
    with torch.no_grad():
        torch.testing.assert_close(model(1000.0 * x), model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(0.001 * x), model(x), atol=1e-5, rtol=1e-5)


def test_snr_cnn_refuses_frames_it_cannot_pool() -> None:
    with pytest.raises(ValueError, match="at least 4 samples, got L=3"):
        SNRCNN(1)(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match=r"x must be \[B, 2, L\]"):
        SNRCNN(1)(torch.randn(2, 128))


# --- SNRRegressor ---------------------------------------------------------------------------------------------------


def test_snr_regressor_learns_the_snr_far_better_than_the_mean() -> None:
    pl.seed_everything(0)
    data = SignalDataModule("synthetic:rml2016.10b", per_key=20, snrs="-10,0,10", batch_size=64)
    model = SNRRegressor(length=128, loss="l1")
    trainer = pl.Trainer(
        max_epochs=10,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, data)
    trainer.test(model, data, verbose=False)
    truths = torch.tensor([snr for snr, row in model.test_errors.items() for _ in range(int(row["count"]))])
    # Predicting the mean SNR for every frame: 20 test frames at each of -10, 0 and 10 dB give an MAE of 6.67 dB.
    mean_mae = float((truths.float() - truths.float().mean()).abs().mean())
    assert sorted(model.test_errors) == [-10, 0, 10] and mean_mae == pytest.approx(20 / 3)
    # Measured at seeds 0-3: test MAE 0.97…1.79 dB.
    assert model.test_overall["mae"] < 0.4 * mean_mae
    assert float(trainer.callback_metrics["test/mae"]) == pytest.approx(model.test_overall["mae"])
    prediction = model.predict_step({"x": torch.randn(5, 2, 128), "snr": torch.zeros(5)}, 0)
    assert prediction["snr_hat"].shape == (5,) and prediction["snr"].shape == (5,)


def test_snr_regressor_refuses_unknown_losses_and_batches_without_snr() -> None:
    with pytest.raises(ValueError, match=r"loss must be one of \('l1', 'mse', 'huber'\), got 'l2'"):
        SNRRegressor(loss="l2")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batches need 'snr'"):
        SNRRegressor().training_step({"x": torch.randn(2, 2, 128), "y": torch.zeros(2)}, 0)


def test_snr_cnn_config_fits_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = ["--data.init_args.data_dir", str(tmp_path / "data"), "--data.init_args.per_key", "5"]
    cli = lightning_main(["fit", "-c", str(CONFIG), *data, "--trainer.fast_dev_run", "true"])
    assert cli.trainer.state.finished
    assert isinstance(cli.model, SNRRegressor) and cli.model.hparams["model"] == "snr_cnn"
    # RadioML 2016.10b's 10 classes and 128-sample frames reached the model through the CLI's links.
    assert (cli.model.hparams["num_classes"], cli.model.hparams["length"]) == (10, 128)
    for key in ("train/loss", "val/loss", "val/mae"):
        assert torch.isfinite(cli.trainer.callback_metrics[key])
    with torch.no_grad():
        assert cli.model(torch.randn(3, 2, 128)).shape == (3,)
