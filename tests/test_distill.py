"""ondevice.distill: the KD/hint losses against hand formulas, the frozen teacher, caching, checkpoints and the CLI."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LightningCLI
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ondevice.distill import (
    DistillationLoss,
    DistillationModule,
    FeatureHint,
    FeatureRecorder,
    align_feature,
    hybrid_loss,
    kd_loss,
    load_weights,
    make_adapter,
    row_digests,
    student_state_dict,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::lightning.fabric.utilities.warnings.PossibleUserWarning",
    "ignore:.*does not have many workers.*",
    "ignore:.*GPU available but not used.*",
    "ignore:.*isinstance\\(treespec, LeafSpec\\)",  # raised inside lightning's own _pytree
)

CLASSES = 3
LENGTH = 32


class TinyStudent(nn.Module):
    """A conv net on [B, 2, 32]: ``features`` gives [B, channels, 32] (channels-first)."""

    def __init__(self, channels: int = 8, num_classes: int = CLASSES) -> None:
        super().__init__()
        self.features = nn.Conv1d(2, channels, kernel_size=3, padding=1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(F.relu(self.features(x)).mean(-1))


class TinyTeacher(nn.Module):
    """A transformer-like net on [B, 2, 32]: patches of 2 samples, ``attn`` gives [B, 16, 24] (channels-last)."""

    def __init__(self, width: int = 24, num_classes: int = CLASSES, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed = nn.Linear(4, width)
        self.attn = nn.MultiheadAttention(width, num_heads=2, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        patches = x.reshape(b, 2, LENGTH // 2, 2).permute(0, 2, 1, 3).reshape(b, LENGTH // 2, 4)
        h = self.embed(patches)
        h, _ = self.attn(h, h, h)
        return self.head(self.drop(h).mean(1))


class DictDataset(Dataset):
    """Examples as the house contract's dicts {"x": [2, L], "y": []}."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def signals(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, LENGTH, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


class TinyDataModule(L.LightningDataModule):
    """Random [n, 2, 32] signals with labels, as dict batches."""

    def __init__(self, n: int = 32, batch_size: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.n, self.batch_size, self.seed = n, batch_size, seed

    def train_dataloader(self) -> DataLoader:
        return DataLoader(DictDataset(*signals(self.n, self.seed)), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(DictDataset(*signals(self.n, self.seed + 1)), batch_size=self.batch_size)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    # Tiny models: a second intra-op thread only adds synchronisation, which stalls badly on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer(**kwargs: Any) -> L.Trainer:
    options: dict[str, Any] = dict(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**(options | kwargs))


HINT = FeatureHint(student="features", teacher="attn", weight=0.5, teacher_layout="channels_last")


def hinted_module(seed: int = 0, **kwargs: Any) -> DistillationModule:
    torch.manual_seed(seed)
    loss = DistillationLoss(alpha=0.7, temperature=2.0, hints=[HINT])
    return DistillationModule(TinyStudent(), TinyTeacher(), loss, **kwargs)


# ---- KD and the hybrid loss ------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.5, 8.0])
def test_kd_loss_is_t_squared_times_batch_mean_kl(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 7, generator=g) * 3, torch.randn(5, 7, generator=g) * 3
    p_t = torch.softmax(t / temperature, -1)
    p_s = torch.softmax(s / temperature, -1)
    by_hand = (p_t * (p_t.log() - p_s.log())).sum() / 5 * temperature**2
    torch.testing.assert_close(kd_loss(s, t, temperature), by_hand, rtol=1e-5, atol=1e-7)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    for scale in (1.0, 1000.0):  # large logits stay finite thanks to log-space targets
        assert abs(kd_loss(s * scale, s * scale, 3.0).item()) < 1e-7
        assert kd_loss(s * scale, t * scale, 3.0).item() > 1e-3
    # sequence logits [B, L, C] average over every position, like [B·L, C]
    torch.testing.assert_close(kd_loss(s.reshape(2, 3, 4), t.reshape(2, 3, 4), 2.0), kd_loss(s, t, 2.0))


def test_kd_gradient_is_t_times_probability_gap_and_of_one_order_across_temperatures() -> None:
    g = torch.Generator().manual_seed(2)
    b, c = 4, 6
    # float64: at large T the probability gaps are ~1/T, below float32's resolution of the softmax
    s0, t = torch.randn(b, c, generator=g, dtype=torch.float64), torch.randn(b, c, generator=g, dtype=torch.float64)

    def grad(temperature: float) -> Tensor:
        s = s0.clone().requires_grad_(True)
        kd_loss(s, t, temperature).backward()
        return s.grad

    # d/ds [T² · KL(p_t ‖ p_s)] / B = T · (p_s − p_t) / B, exactly
    for temperature in (1.0, 4.0):
        exact = temperature * (torch.softmax(s0 / temperature, -1) - torch.softmax(t / temperature, -1)) / b
        torch.testing.assert_close(grad(temperature), exact)
    # for large T, softmax(z/T) ≈ (1 + (z − z̄)/T)/C, so the gradient tends to ((s − s̄) − (t − t̄)) / (C·B): no T left
    limit = ((s0 - s0.mean(-1, keepdim=True)) - (t - t.mean(-1, keepdim=True))) / (c * b)
    # the neglected second-order term is O(1/T) of the limit
    torch.testing.assert_close(grad(1e5), limit, rtol=1e-4, atol=1e-6)
    norms = torch.stack([grad(temperature).norm() for temperature in (2.0, 8.0, 32.0, 128.0)])
    ratios = norms / limit.norm()
    assert bool(((ratios > 0.7) & (ratios < 1.3)).all()), ratios


def test_alpha_zero_total_is_exactly_cross_entropy() -> None:
    g = torch.Generator().manual_seed(3)
    s, t, y = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    ce = F.cross_entropy(s, y)
    terms = DistillationLoss(alpha=0.0, temperature=3.0)(s, t, y)
    assert torch.equal(terms["total"], ce)
    assert torch.equal(hybrid_loss(s, t, y, alpha=0.0, temperature=3.0), ce)
    assert terms["kd"].item() > 0  # still reported, just weighted out
    half = DistillationLoss(alpha=0.25, temperature=3.0)(s, t, y)
    torch.testing.assert_close(half["total"], 0.75 * ce + 0.25 * kd_loss(s, t, 3.0))
    torch.testing.assert_close(hybrid_loss(s, t, y, 0.25, 3.0, [(2.0, torch.tensor(0.5))]), half["total"] + 1.0)


def test_teacher_correct_distils_only_where_the_teacher_is_right() -> None:
    g = torch.Generator().manual_seed(5)
    s, y = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])
    t = torch.randn(6, 4, generator=g)
    t[:3] = F.one_hot(y[:3], 4) * 5.0  # the teacher is right on the first three, wrong on the rest
    t[3:] = F.one_hot((y[3:] + 1) % 4, 4) * 5.0
    terms = DistillationLoss(alpha=0.4, temperature=2.0, label_smoothing=0.1, distill_on="teacher_correct")(s, t, y)
    ce = F.cross_entropy(s, y, label_smoothing=0.1, reduction="none")
    kd = torch.stack([kd_loss(s[i : i + 1], t[i : i + 1], 2.0) for i in range(6)])
    by_hand = torch.cat([0.6 * ce[:3] + 0.4 * kd[:3], ce[3:]]).mean()
    torch.testing.assert_close(terms["total"], by_hand)
    torch.testing.assert_close(terms["kd"], kd[:3].mean())
    assert terms["distilled"].item() == 0.5
    assert set(terms) == {"ce", "kd", "distilled", "total"}
    # A teacher right everywhere gives the plain hybrid; wrong everywhere gives (smoothed) CE alone.
    all_right = F.one_hot(y, 4) * 5.0
    plain = DistillationLoss(alpha=0.4, temperature=2.0)(s, all_right, y)["total"]
    gated = DistillationLoss(alpha=0.4, temperature=2.0, distill_on="teacher_correct")(s, all_right, y)["total"]
    torch.testing.assert_close(gated, plain)
    all_wrong = F.one_hot((y + 1) % 4, 4) * 5.0
    wrong = DistillationLoss(alpha=0.4, temperature=2.0, label_smoothing=0.1, distill_on="teacher_correct")(
        s, all_wrong, y
    )
    assert wrong["distilled"].item() == 0.0
    assert wrong["kd"].item() == 0.0
    torch.testing.assert_close(wrong["total"], ce.mean())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"distill_on": "teacher_wrong"}, "distill_on"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"hints": [HINT, HINT]}, "distinct"),
    ],
)
def test_loss_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistillationLoss(**kwargs)


def test_feature_hint_rejects_an_unknown_layout() -> None:
    with pytest.raises(ValueError, match=r"student_layout.*channels_first"):
        FeatureHint("a", "b", student_layout="NCHW")


# ---- feature hints ---------------------------------------------------------------------------------------------


def test_hint_maps_conv_student_to_channels_last_teacher_and_matches_hand_mse() -> None:
    module = hinted_module()
    x, y = signals(4, seed=5)
    module.build_adapters(x)
    adapter = module.adapters[HINT.key]
    # channels_last [B, L=16, D=24]: the teacher's width is 24, its length 16; the student is [B, C=8, L=32]
    assert isinstance(adapter, nn.Conv1d)
    assert (adapter.in_channels, adapter.out_channels, adapter.kernel_size) == (8, 24, (1,))

    with (
        FeatureRecorder(module.student, ["features"]) as s_rec,
        FeatureRecorder(module.teacher, ["attn"]) as t_rec,
    ):
        s_logits, t_logits = module.student(x), module.teacher(x)
    s_feat, t_feat = s_rec.get("features"), t_rec.get("attn")  # attn returns a tuple: its first element is kept
    assert s_feat.shape == (4, 8, 32) and t_feat.shape == (4, 16, 24)
    adapted, target = align_feature(HINT, adapter, s_feat, t_feat)
    assert adapted.shape == target.shape == (4, 24, 16)

    # by hand: the 1×1 conv is a matrix product, and linear resampling 32 → 16 (align_corners=False) samples
    # at 2i + 0.5, the mean of each pair of neighbours
    w, bias = adapter.weight[:, :, 0], adapter.bias
    by_hand = (torch.einsum("oc,bcl->bol", w, s_feat) + bias[None, :, None]).reshape(4, 24, 16, 2).mean(-1)
    expected = ((by_hand - t_feat.transpose(1, 2)) ** 2).mean()
    terms = module.loss(s_logits, t_logits, y, s_rec.features, t_rec.features, module.adapters)
    torch.testing.assert_close(terms["hint/features->attn"], expected)
    ce, kd = F.cross_entropy(s_logits, y), kd_loss(s_logits, t_logits, 2.0)
    torch.testing.assert_close(terms["total"], 0.3 * ce + 0.7 * kd + 0.5 * expected)
    assert all(not m._forward_hooks for m in [*module.student.modules(), *module.teacher.modules()])


@pytest.mark.parametrize(
    ("student_shape", "teacher_shape", "teacher_layout", "kind", "aligned"),
    [
        ((3, 5), (3, 7), "channels_first", nn.Linear, (3, 7)),
        ((3, 4, 8, 8), (3, 4, 6, 3), "channels_last", nn.Conv2d, (3, 3, 4, 6)),
    ],
)
def test_adapters_for_2d_and_4d_features(
    student_shape: tuple[int, ...], teacher_shape: tuple[int, ...], teacher_layout: str, kind: type, aligned: tuple
) -> None:
    hint = FeatureHint("s", "t", teacher_layout=teacher_layout)
    s, t = torch.randn(student_shape), torch.randn(teacher_shape)
    adapter = make_adapter(hint, s, t)
    assert type(adapter) is kind
    adapted, target = align_feature(hint, adapter, s, t)
    assert adapted.shape == target.shape == aligned
    if kind is nn.Conv2d:  # bilinear resampling of the 1×1 conv's output to the teacher's 4 × 6
        resampled = F.interpolate(adapter(s), size=(4, 6), mode="bilinear", align_corners=False)
        torch.testing.assert_close(adapted, resampled)
        torch.testing.assert_close(target, t.permute(0, 3, 1, 2))


def test_unknown_module_names_are_named_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"student TinyStudent has no submodule named 'featurez'.*'features'"):
        DistillationModule(TinyStudent(), TinyTeacher(), DistillationLoss(hints=[FeatureHint("featurez", "attn")]))
    with pytest.raises(ValueError, match=r"teacher TinyTeacher has no submodule named 'encoder'"):
        DistillationModule(TinyStudent(), TinyTeacher(), DistillationLoss(hints=[FeatureHint("features", "encoder")]))


def test_recorders_keep_their_own_features_and_remove_their_hooks() -> None:
    model = TinyStudent()
    first, second = FeatureRecorder(model, ["features"]), FeatureRecorder(model, ["head"])
    model(torch.randn(2, 2, LENGTH))
    assert set(first.features) == {"features"} and set(second.features) == {"head"}
    first.remove()
    second.remove()
    assert not model.features._forward_hooks and not model.head._forward_hooks


# ---- the frozen teacher ----------------------------------------------------------------------------------------


def test_teacher_stays_frozen_in_eval_mode_and_out_of_the_optimizer() -> None:
    teacher = TinyTeacher(dropout=0.5)  # a teacher whose train mode would change its output
    module = DistillationModule(TinyStudent(), teacher.train(), DistillationLoss(hints=[HINT]))
    module.build_adapters(signals(2, seed=0)[0])
    module.train()
    assert module.student.training and module.adapters.training
    assert not any(m.training for m in module.teacher.modules())
    assert not any(p.requires_grad for p in module.teacher.parameters())
    optimizer = module.configure_optimizers()
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in [*module.student.parameters(), *module.adapters.parameters()]}
    assert in_optimizer == trainable
    assert in_optimizer.isdisjoint(id(p) for p in module.teacher.parameters())
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 1e-3


class GradientProbe(L.Callback):
    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.grads = {name: p.grad for name, p in pl_module.named_parameters()}


def test_gradients_flow_only_into_the_student_and_the_adapters() -> None:
    module = hinted_module()
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}
    probe = GradientProbe()
    trainer(max_steps=1, limit_val_batches=0, callbacks=[probe]).fit(module, datamodule=TinyDataModule())
    teacher_grads = {k: g for k, g in probe.grads.items() if k.startswith("teacher.")}
    others = {k: g for k, g in probe.grads.items() if not k.startswith("teacher.")}
    assert teacher_grads and all(g is None for g in teacher_grads.values())
    assert {k.split(".")[0] for k in others} == {"student", "adapters"}
    assert all(g is not None and g.abs().sum() > 0 for g in others.values()), others.keys()
    for key, value in module.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key])
    assert not module.teacher.training


def test_fit_without_an_example_input_says_how_to_give_one() -> None:
    loader = DataLoader(TensorDataset(*signals(8, seed=0)), batch_size=4)
    with pytest.raises(RuntimeError, match=r"example_input_array.*build_adapters"):
        trainer(max_steps=1).fit(hinted_module(), loader)
    module = hinted_module()
    module.example_input_array = signals(2, seed=0)[0]
    trainer(max_steps=1).fit(module, loader)  # tuple batches (x, y) and an explicit example
    assert module.adapters[HINT.key].out_channels == 24

    # test mirrors validation: the student's CE and accuracy over the whole set, plus the distillation terms
    x, y = loader.dataset.tensors
    metrics = trainer().test(module, loader, verbose=False)[0]
    assert set(metrics) == {"test/loss", "test/acc", "test/kd", "test/hint/features->attn", "test/total"}
    module.eval()
    with torch.no_grad():
        logits = module(x)
    assert metrics["test/loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert metrics["test/acc"] == pytest.approx((logits.argmax(-1) == y).float().mean().item())
    predictions = trainer().predict(module, DataLoader(TensorDataset(x), batch_size=8))
    assert torch.equal(predictions[0], logits)


def test_batches_without_inputs_or_targets_are_refused() -> None:
    module = DistillationModule(TinyStudent(), TinyTeacher())
    with pytest.raises(ValueError, match="inputs under 'x'"):
        module.training_step({"inputs": torch.zeros(2, 2, LENGTH)}, 0)
    with pytest.raises(ValueError, match="training batches need targets"):
        module.training_step({"x": torch.zeros(2, 2, LENGTH)}, 0)


# ---- learning --------------------------------------------------------------------------------------------------

DIM, K = 20, 4


def gaussian_task(seed: int) -> tuple[nn.Linear, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """K equal-covariance (identity) Gaussians in 20-D; the teacher's logits are the exact log posterior (+ const)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(K, DIM, generator=g) * 0.5
    teacher = nn.Linear(DIM, K)
    with torch.no_grad():  # log p(k | x) = μₖ·x − |μₖ|²/2 + const for identity covariance and equal priors
        teacher.weight.copy_(means)
        teacher.bias.copy_(-0.5 * (means**2).sum(1))

    def sample(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, K, (n,), generator=g)
        return means[y] + torch.randn(n, DIM, generator=g), y

    x_train, y_train = sample(150)
    noisy = torch.rand(150, generator=g) < 0.2  # label noise the CE student memorises
    y_train = torch.where(noisy, torch.randint(0, K, (150,), generator=g), y_train)
    return teacher, (x_train, y_train), sample(2000)


def val_loss_after_training(seed: int, loss: DistillationLoss) -> float:
    teacher, train, val = gaussian_task(seed)
    L.seed_everything(seed, verbose=False)  # the same student initialisation and shuffling for both objectives
    student = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, K))
    module = DistillationModule(student, teacher, loss, optimizer=partial(torch.optim.AdamW, lr=1e-2))
    trainer(max_epochs=40, limit_val_batches=0).fit(module, DataLoader(TensorDataset(*train), 50, shuffle=True))
    metrics = trainer().validate(module, DataLoader(TensorDataset(*val), batch_size=1000), verbose=False)[0]
    return metrics["val/loss"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_distilled_student_generalises_better_than_cross_entropy_alone(seed: int) -> None:
    ce_only = val_loss_after_training(seed, DistillationLoss(alpha=0.0))
    distilled = val_loss_after_training(seed, DistillationLoss(alpha=0.9, temperature=2.0))
    teacher, _, (x_val, y_val) = gaussian_task(seed)
    bayes = F.cross_entropy(teacher(x_val), y_val).item()
    # Over 12 seeds the CE student ends 1.0-2.0 nats above the distilled one, which ends within 0.03 of Bayes.
    assert distilled < ce_only - 0.5, (distilled, ce_only)
    assert distilled < bayes + 0.15, (distilled, bayes)


# ---- teacher-logit cache ---------------------------------------------------------------------------------------


class EpochCalls(L.Callback):
    def __init__(self, calls: list[int]) -> None:
        self.calls, self.per_epoch = calls, []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.per_epoch.append(len(self.calls) - sum(self.per_epoch))


def test_teacher_runs_only_in_the_first_epoch_with_cached_logits() -> None:
    torch.manual_seed(0)
    module = DistillationModule(TinyStudent(), TinyTeacher(), cache_teacher_logits=True)
    calls: list[int] = []
    module.teacher.register_forward_hook(lambda *_: calls.append(1))
    counter = EpochCalls(calls)
    x, y = signals(32, seed=0)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    fitted = trainer(max_epochs=3, limit_val_batches=0, callbacks=[counter])
    fitted.fit(module, loader)
    assert counter.per_epoch == [4, 0, 0]
    assert fitted.callback_metrics["train/teacher_cache_hit_rate"].item() == 1.0
    assert len(module.teacher_cache) == 32
    with torch.no_grad():
        fresh = module.teacher(x)
    torch.testing.assert_close(torch.stack([module.teacher_cache[k] for k in row_digests(x)]), fresh)


def test_row_digests_key_on_content_dtype_and_shape() -> None:
    x = torch.randn(3, 2, 4)
    keys = row_digests(x)
    assert len(set(keys)) == 3 and all(len(k) == 16 for k in keys)
    assert row_digests(x[[2, 0]]) == [keys[2], keys[0]]  # a row's key does not depend on its batch
    assert row_digests(x.double())[0] != keys[0]
    assert row_digests(x.reshape(3, 4, 2))[0] != keys[0]  # same bytes, different shape


def test_cache_with_hints_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"cache_teacher_logits.*hints"):
        hinted_module(cache_teacher_logits=True)


# ---- checkpoints -----------------------------------------------------------------------------------------------


def test_checkpoint_holds_the_student_alone_and_reloads_strictly(tmp_path: Path) -> None:
    module = hinted_module()
    fitted = trainer(max_steps=2, limit_val_batches=0)
    fitted.fit(module, datamodule=TinyDataModule())
    path = tmp_path / "distilled.ckpt"
    fitted.save_checkpoint(path)

    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert not [k for k in state if k.startswith("teacher.")]
    assert {k.split(".")[0] for k in state} == {"student", "adapters"}

    x = signals(4, seed=9)[0]
    bare = TinyStudent()
    bare.load_state_dict(student_state_dict(path), strict=True)
    module.eval()
    with torch.no_grad():
        assert torch.equal(bare(x), module(x))

    # load_from_checkpoint loads strictly: the teacher comes back from the live one, the adapters from their shapes
    torch.manual_seed(1)
    teacher = TinyTeacher()
    loaded = DistillationModule.load_from_checkpoint(
        path, student=TinyStudent(), teacher=teacher, loss=DistillationLoss(hints=[HINT])
    )
    assert loaded.teacher is teacher and not loaded.teacher.training
    for key, value in module.adapters.state_dict().items():
        assert torch.equal(loaded.adapters.state_dict()[key], value)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), module(x))

    # resuming with plain loaders (no datamodule, no example input): the adapters are rebuilt from the checkpoint
    resumed = hinted_module(seed=3)
    loader = DataLoader(TensorDataset(*signals(16, seed=0)), batch_size=8)
    again = trainer(max_steps=4, limit_val_batches=0)
    again.fit(resumed, loader, ckpt_path=path)
    assert again.global_step == 4


def test_teacher_checkpoint_finds_the_lightning_prefix(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = TinyTeacher()
    lightning_style = tmp_path / "teacher.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}, "epoch": 3}, lightning_style)
    plain = tmp_path / "teacher.pt"
    torch.save(source.state_dict(), plain)
    for path, prefix in ((lightning_style, "model."), (plain, "")):
        torch.manual_seed(1)
        assert load_weights(TinyTeacher(), path) == prefix  # the general loader, on any network
        module = DistillationModule(TinyStudent(), TinyTeacher(), teacher_checkpoint=str(path))
        for key, value in source.state_dict().items():
            assert torch.equal(module.teacher.state_dict()[key], value)
        assert not any(p.requires_grad for p in module.teacher.parameters())


def test_mismatched_teacher_checkpoint_names_the_file(tmp_path: Path) -> None:
    wrong = tmp_path / "not_the_teacher.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in TinyStudent().state_dict().items()}}, wrong)
    with pytest.raises(ValueError, match=r"not_the_teacher\.ckpt.*missing \['attn"):
        DistillationModule(TinyStudent(), TinyTeacher(), teacher_checkpoint=str(wrong))
    narrower = tmp_path / "narrower.pt"
    torch.save(TinyTeacher(width=12).state_dict(), narrower)
    with pytest.raises(ValueError, match=r"narrower\.pt.*do not fit"):
        DistillationModule(TinyStudent(), TinyTeacher(), teacher_checkpoint=str(narrower))


# ---- LightningCLI ----------------------------------------------------------------------------------------------


def test_lightning_cli_builds_the_module_and_loss_from_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["distill"])  # pytest's own arguments are not the CLI's
    here = TinyStudent.__module__
    config = tmp_path / "distill.yaml"
    config.write_text(
        f"""
model:
  student:
    class_path: {here}.TinyStudent
    init_args: {{channels: 8}}
  teacher:
    class_path: {here}.TinyTeacher
  loss:
    class_path: ondevice.distill.DistillationLoss
    init_args:
      alpha: 0.5
      temperature: 2.0
      hints:
        - student: features
          teacher: attn
          weight: 0.5
          teacher_layout: channels_last
  optimizer:
    class_path: torch.optim.SGD
    init_args: {{lr: 0.1}}
data:
  n: 16
  batch_size: 8
trainer:
  accelerator: cpu
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
"""
    )
    cli = LightningCLI(
        DistillationModule,
        TinyDataModule,
        args=["fit", "--config", str(config), "--trainer.fast_dev_run", "1"],
        save_config_callback=None,
    )
    loss = cli.model.loss
    assert (loss.alpha, loss.temperature) == (0.5, 2.0)
    assert loss.hints == [HINT]
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["lr"] == 0.1
    metrics = cli.trainer.callback_metrics
    assert {"train/ce", "train/kd", "train/hint/features->attn", "train/loss", "val/loss", "val/acc", "val/kd"} <= set(
        metrics
    )
    # one training step: the logged total is the hybrid of the logged terms
    expected = 0.5 * metrics["train/ce"] + 0.5 * metrics["train/kd"] + 0.5 * metrics["train/hint/features->attn"]
    torch.testing.assert_close(metrics["train/loss"], expected)
    assert 0.0 <= metrics["val/acc"].item() <= 1.0
    # the CLI's hyperparameters are plain types: the checkpoint opens with weights_only=True
    path = tmp_path / "cli.ckpt"
    cli.trainer.save_checkpoint(path)
    TinyStudent().load_state_dict(student_state_dict(path), strict=True)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["cache_teacher_logits"] is False
