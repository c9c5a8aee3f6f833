"""SNR-routed inference: estimate each frame's SNR, round it to the training grid, classify with that SNR's model.

Single-SNR and Boosting models (``rfml.studies.snr.study``) assume the test SNR is known. :class:`SNRRouter` supplies
it: a blind estimator (the learned ``snr_cnn`` regressor or the M2M4 moment estimator) gives each frame's SNR, an
optional upward bias is added (a model trained a little above the true SNR loses less than one trained below it,
Wang et al. 2020), the estimate is rounded to the nearest SNR of the grid, and the frame goes to that SNR's expert.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from ondevice.checkpoint_paths import load_checkpoint
from rfml.data.views import apply_view
from rfml.dsp.snr import estimation_errors, m2m4


class M2M4Estimator(nn.Module):
    """The blind M2M4 moment estimator (:func:`rfml.dsp.snr.m2m4`) as a module: ``[B, 2, L] -> [B]`` dB."""

    def forward(self, x: Tensor) -> Tensor:
        return m2m4(x)


def _exporting() -> bool:
    return bool(torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting())


class SNRRouter(pl.LightningModule):
    """Routes each frame to the expert of its estimated SNR.

    Args:
        estimator: ``[B, 2, L]`` raw I/Q → ``[B]`` SNR in dB (e.g. ``SNRRegressor`` or :class:`M2M4Estimator`).
        experts: one classifier per grid SNR, in grid order; each takes the ``view`` of the frame.
        grid: the experts' training SNRs (dB), ascending.
        bias_db: added to each estimate before rounding to the grid (upward: optimistic).
        view: the input view of the experts (``iq``, ``fft_iq`` …; see ``rfml.data.views``).

    ``forward`` dispatches each expert only on its own frames; during ONNX/torch.export tracing it runs every expert
    on every frame and gathers, a static graph with the same result.
    """

    def __init__(
        self,
        estimator: nn.Module,
        experts: Sequence[nn.Module],
        grid: Sequence[int],
        bias_db: float = 0.0,
        view: str = "iq",
    ) -> None:
        super().__init__()
        if len(experts) != len(grid) or not experts:
            raise ValueError(f"need one expert per grid SNR, got {len(experts)} experts for grid {list(grid)}")
        if list(grid) != sorted(grid):
            raise ValueError(f"grid must be ascending, got {list(grid)}")
        self.estimator = estimator
        self.experts = nn.ModuleList(experts)
        self.register_buffer("grid", torch.as_tensor(list(grid), dtype=torch.float32))
        self.bias_db = float(bias_db)
        self.view = view

    def route(self, snr_db: Tensor) -> Tensor:
        """Expert index of each SNR (dB): the nearest grid SNR to ``snr_db + bias_db``, ties to the higher, clamped
        to the grid's ends (:func:`rfml.dsp.snr.round_to_grid`, written here without its data-dependent input
        checks so that the router traces to a static graph)."""
        target = snr_db.reshape(-1).to(self.grid.dtype) + self.bias_db
        distance = (target[:, None] - self.grid[None, :]).abs()  # [B, K]
        return (self.grid.numel() - 1) - distance.flip(-1).argmin(-1)  # the last of equal minima: the higher SNR

    def dispatch(self, x: Tensor, index: Tensor) -> Tensor:
        """Logits ``[B, C]``: frame ``b`` classified by expert ``index[b]``."""
        inputs = apply_view(x, self.view)
        if _exporting():
            every = torch.stack([expert(inputs) for expert in self.experts])  # [K, B, C]
            pick = index.reshape(1, -1, 1).expand(1, every.shape[1], every.shape[2])
            return every.gather(0, pick).squeeze(0)
        out: Tensor | None = None
        for k in torch.unique(index).tolist():
            chosen = index == k
            logits = self.experts[k](inputs[chosen])
            if out is None:
                out = logits.new_zeros(x.shape[0], logits.shape[-1])
            out[chosen] = logits
        assert out is not None, "empty batch"
        return out

    def classify(self, x: Tensor, snr_db: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(logits, the SNR used): routed by ``snr_db`` when given (e.g. the true SNR), else by the estimate."""
        used = self.estimator(x).reshape(-1) if snr_db is None else snr_db.to(x.dtype)
        return self.dispatch(x, self.route(used)), used

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(x)[0]

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        x = batch["x"] if isinstance(batch, dict) else batch[0]
        logits, used = self.classify(x)
        out = {"pred": logits.argmax(-1), "snr_hat": used, "expert_snr": self.grid[self.route(used)]}
        if isinstance(batch, dict):
            out.update({k: batch[k] for k in ("y", "snr") if k in batch})
        return out


def _load(module: nn.Module, path: Any) -> nn.Module:
    module.load_state_dict(load_checkpoint(path))
    return module.eval()


def evaluate_router(
    study: Any,
    experts: dict[int, dict[str, Any]],
    all_snr: dict[str, Any],
    estimator: dict[str, Any],
    boosted: dict[int, dict[str, Any]],
) -> dict[str, Any]:
    """Accuracy of SNR routing on the study's test split, per SNR and overall, for each way of knowing the SNR."""
    from rfml.studies.snr.runs import per_snr_accuracy, study_data
    from rfml.trainers import Classifier
    from rfml.trainers.snr_regressor import SNRRegressor

    config = study.config
    module = study.module
    raw = study_data(config.data, view="iq")  # the same split; frames as stored (the estimator's input)

    def classifier(record: dict[str, Any]) -> nn.Module:
        model = Classifier(
            config.train.model, module.num_classes, module.length, copy.deepcopy(config.train.model_kwargs)
        )
        return _load(model, study.model_path(record))

    grid = sorted(experts)
    single_experts = [classifier(experts[s]) for s in grid]
    boost_experts = [classifier(boosted[s]) if s in boosted else single_experts[i] for i, s in enumerate(grid)]
    learned = _load(
        SNRRegressor(
            model=config.estimator.model, length=raw.length, model_kwargs=copy.deepcopy(config.estimator.model_kwargs)
        ),
        study.model_path(estimator),
    )
    universal = classifier(all_snr)

    rows = raw.rows["test"]
    frames, labels, snrs, est_learned, est_m2m4 = [], [], [], [], []
    with torch.no_grad():
        for batch in raw.loader(rows, shuffle=False):
            frames.append(batch["x"])
            labels.append(batch["y"])
            snrs.append(batch["snr"])
            est_learned.append(learned(batch["x"]).reshape(-1))
            est_m2m4.append(m2m4(batch["x"]))
    x, y, snr = torch.cat(frames), torch.cat(labels), torch.cat(snrs)
    estimates = {"learned": torch.cat(est_learned), "m2m4": torch.cat(est_m2m4)}

    def score(pred: Tensor) -> dict[str, Any]:
        return {"overall": float((pred == y).float().mean()), "per_snr": per_snr_accuracy(pred, y, snr)}

    def routed(experts_: list[nn.Module], snr_db: Tensor, bias: float) -> Tensor:
        router_ = SNRRouter(learned, experts_, grid, bias_db=bias, view=config.data.view).eval()
        with torch.no_grad():
            return torch.cat(
                [
                    router_.classify(xb, sb)[0].argmax(-1)
                    for xb, sb in zip(x.split(1024), snr_db.split(1024), strict=True)
                ]
            )

    variants: dict[str, dict[str, Any]] = {}
    variants["oracle"] = score(routed(single_experts, snr.float(), 0.0))
    for name, estimate in estimates.items():
        for bias in config.router.bias_db:
            variants[f"{name}{bias:+g}dB"] = score(routed(single_experts, estimate, bias))
    if boosted:
        variants["boost_oracle"] = score(routed(boost_experts, snr.float(), 0.0))
        for bias in config.router.bias_db:
            variants[f"boost_learned{bias:+g}dB"] = score(routed(boost_experts, estimates["learned"], bias))
    with torch.no_grad():
        all_pred = torch.cat([apply_and_predict(universal, xb, config.data.view) for xb in x.split(1024)])
    variants["all_snr"] = score(all_pred)
    return {
        "grid": grid,
        "bias_db": config.router.bias_db,
        "boosted_targets": sorted(boosted),
        "variants": variants,
        "estimator_errors": {
            name: {str(k): v for k, v in estimation_errors(e, snr.float()).items()} for name, e in estimates.items()
        },
        "estimator_timing": {k: estimator[k] for k in ("epochs", "best_epoch", "train_seconds")},
    }


def apply_and_predict(model: nn.Module, x: Tensor, view: str) -> Tensor:
    """Labels of raw I/Q frames ``x`` from a model that takes the ``view`` of the frames."""
    return model(apply_view(x, view)).argmax(-1)
