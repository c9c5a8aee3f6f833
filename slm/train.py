"""Pre-training (and distilling) small decoder-only LMs: the `LanguageModel` LightningModule, the `slm fit` CLI and
`sample` to read a trained checkpoint back as text."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.aggregation import MeanMetric

from ondevice.checkpoint_paths import check_cli_ckpt_path, load_checkpoint, refuse_remote
from ondevice.distill import kd_loss
from ondevice.io import refuse_to_overwrite, sha256_file
from ondevice.quiet import silence_lightning
from slm.arch import ArchConfig
from slm.data import EOT, META_NAME, TOKENIZER_NAME
from slm.model import GPT

# The key under which `LanguageModel` records what a checkpoint needs besides weights (tokenizer, provenance).
CHECKPOINT_KEY = "slm"
SUBCOMMANDS = ("fit", "validate", "test")


def resolve_arch(arch: ArchConfig | str | Mapping[str, Any]) -> ArchConfig:
    """An `ArchConfig` from a preset name, an `ArchConfig` or its dict (as stored in checkpoints)."""
    if isinstance(arch, ArchConfig):
        return arch
    if isinstance(arch, str):
        return ArchConfig.from_name(arch)
    if isinstance(arch, Mapping):
        return ArchConfig.from_dict(dict(arch), where="LanguageModel.arch")
    raise TypeError(f"LanguageModel.arch: expected a preset name, an ArchConfig or a dict, got {type(arch).__name__}")


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """The learning-rate multiplier before optimizer step ``step``: linear warmup, then cosine decay.

    Warmup rises as (step + 1) / (warmup + 1), so the first step already learns and step ``warmup_steps`` is at
    the full rate; the cosine then falls to ``min_lr_ratio`` at ``total_steps`` (the value after the last step).
    A warmup longer than the run is cut to the run.
    """
    warmup = min(warmup_steps, total_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if total_steps <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (total_steps - warmup))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by `slm fit`, checked to hold a `LanguageModel`'s arch and weights.

    Read from a local file only (a URL raises :class:`ondevice.checkpoint_paths.RemoteCheckpointError`), with
    ``torch.load(weights_only=True)``: tensors and plain containers, never code.
    """
    checkpoint = load_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "arch" not in hparams or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path}: field 'hyper_parameters.arch' and 'state_dict' expected; is this a checkpoint of `slm fit`?"
        )
    return checkpoint


def load_gpt(checkpoint: Mapping[str, Any], where: str) -> GPT:
    """The `GPT` of a `LanguageModel` checkpoint (read by `read_checkpoint`), its weights loaded strictly."""
    arch = resolve_arch(checkpoint["hyper_parameters"]["arch"])
    model = GPT(arch)
    weights = {k[len("model.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"{where}: its weights do not fit its own arch {arch.summary()}: {err}") from err
    return model


class LanguageModel(L.LightningModule):
    """A `GPT` trained for next-token prediction, optionally distilled from a larger frozen teacher.

    Args:
        arch: a preset name (``tiny``) or a full `ArchConfig` (YAML: a mapping of its fields). Its ``vocab_size``
            must cover the data's ``vocab_size``; the `slm` CLI sets the data's from it.
        lr, weight_decay, betas: AdamW; weight decay applies to matrices and embeddings (≥ 2-D), never to norms
            or biases.
        warmup_steps, min_lr_ratio: linear warmup to ``lr``, then cosine decay to ``min_lr_ratio · lr`` at the
            end of the run (``trainer.estimated_stepping_batches``), stepped every optimizer step.
        teacher_checkpoint: a checkpoint of `slm fit` with the same vocabulary (and tokenizer). Its model runs
            frozen in eval mode; the loss becomes ``(1 − alpha)·CE + alpha·T²·KL(teacher ‖ student)`` per token
            (`ondevice.distill.kd_loss`). The teacher is neither optimized nor saved in this model's checkpoints,
            and the path is not a hyperparameter, so `load_from_checkpoint` rebuilds the student alone.
        alpha, temperature: the weight of the KD term and the softening temperature T.

    Logs ``train/loss`` (the objective), ``train/ce``, ``train/kd`` when distilling, ``train/lr``, and
    ``val/loss`` (the student's token-mean cross-entropy, comparable with and without a teacher) and ``val/ppl``.
    """

    def __init__(
        self,
        arch: ArchConfig | str = "tiny",
        lr: float = 3e-3,
        weight_decay: float = 0.1,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 20,
        min_lr_ratio: float = 0.1,
        teacher_checkpoint: str | None = None,
        alpha: float = 0.5,
        temperature: float = 2.0,
    ) -> None:
        super().__init__()
        config = resolve_arch(arch)
        if not lr > 0:
            raise ValueError(f"LanguageModel.lr must be > 0, got {lr}")
        if not 0 <= min_lr_ratio <= 1:
            raise ValueError(f"LanguageModel.min_lr_ratio must lie in [0, 1], got {min_lr_ratio}")
        if warmup_steps < 0:
            raise ValueError(f"LanguageModel.warmup_steps must be >= 0, got {warmup_steps}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"LanguageModel.alpha (the weight of the KD term) must lie in [0, 1], got {alpha}")
        if not temperature > 0:
            raise ValueError(f"LanguageModel.temperature must be > 0, got {temperature}")
        # The teacher path stays out of the hyperparameters so a student checkpoint loads without its teacher file.
        self.save_hyperparameters(ignore=["teacher_checkpoint"])
        # A dict, not the dataclass: checkpoints stay loadable with torch.load(weights_only=True).
        self.hparams["arch"] = config.to_dict()
        self.arch = config
        self.model = GPT(config)
        self.teacher_checkpoint = teacher_checkpoint
        self.teacher: GPT | None = None
        self.teacher_tokenizer_sha256: str | None = None
        if teacher_checkpoint is not None:
            self._load_teacher(teacher_checkpoint)
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()

    def _load_teacher(self, path: str) -> None:
        if not Path(refuse_remote(path, "LanguageModel.teacher_checkpoint")).is_file():
            raise FileNotFoundError(
                f"LanguageModel.teacher_checkpoint: {path}: no such file; train the teacher first "
                "(slm fit -c slm/configs/tiny_teacher.yaml) or pass --model.init_args.teacher_checkpoint PATH"
            )
        checkpoint = read_checkpoint(path)
        teacher = load_gpt(checkpoint, f"teacher_checkpoint {path}")
        if teacher.config.vocab_size != self.arch.vocab_size:
            raise ValueError(
                f"LanguageModel: the teacher ({path}) has vocab_size {teacher.config.vocab_size} but the student's "
                f"arch has vocab_size {self.arch.vocab_size}; distillation matches logits token by token, so both "
                "must share one vocabulary (and tokenizer)"
            )
        teacher.requires_grad_(False)
        teacher.eval()
        self.teacher = teacher
        self.teacher_tokenizer_sha256 = (checkpoint.get(CHECKPOINT_KEY) or {}).get("tokenizer_sha256")

    # ---- modes and data checks ----

    def train(self, mode: bool = True) -> LanguageModel:
        """Set the student to ``mode``; the teacher stays in eval mode (Lightning calls this every epoch)."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def setup(self, stage: str) -> None:
        """Check the data against the model: vocabulary sizes, and the teacher's tokenizer when distilling."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        data_vocab = getattr(datamodule, "vocab_size", None)
        if data_vocab is not None and data_vocab > self.arch.vocab_size:
            raise ValueError(
                f"the data's vocab_size {data_vocab} exceeds the model's arch.vocab_size {self.arch.vocab_size}: "
                "token ids past the embedding table cannot be looked up; make arch.vocab_size >= data vocab_size"
            )
        data_sha = _data_tokenizer_sha256(datamodule)
        if self.teacher is not None and self.teacher_tokenizer_sha256 and data_sha:
            if data_sha != self.teacher_tokenizer_sha256:
                raise ValueError(
                    f"teacher_checkpoint {self.teacher_checkpoint} was trained with another tokenizer (sha256 "
                    f"{self.teacher_tokenizer_sha256[:12]}…) than the data's {datamodule.tokenizer_path} "
                    f"({data_sha[:12]}…); token ids would mean different strings. Use the teacher's data settings"
                )

    # ---- optimization ----

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW over the student (decay on ≥ 2-D weights only) with the warmup-cosine schedule per step."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.hparams["weight_decay"]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams["lr"], betas=tuple(self.hparams["betas"]))
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError(
                "LanguageModel: the cosine schedule needs a finite run; set trainer.max_steps (or max_epochs)"
            )
        warmup, ratio = self.hparams["warmup_steps"], self.hparams["min_lr_ratio"]
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, warmup, int(total), ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- steps ----

    def forward(self, tokens: Tensor) -> Tensor:
        """Logits [B, T, V] of the student."""
        return self.model(tokens)

    def _ce(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        logits = self.model(x)
        ce = self._ce(logits, y)
        loss = ce
        if self.teacher is not None:
            with torch.no_grad():
                teacher_logits = self.teacher(x)
            # kd_loss flattens [B, T, V] to rows and takes the batch mean: a per-token KL, as CE is per token.
            kd = kd_loss(logits, teacher_logits, self.hparams["temperature"])
            alpha = self.hparams["alpha"]
            loss = ce if alpha == 0 else (1 - alpha) * ce + alpha * kd
            self.log("train/kd", kd, batch_size=x.shape[0])
            self.log("train/ce", ce, batch_size=x.shape[0])
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=x.shape[0])
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], metric: MeanMetric) -> None:
        x, y = batch
        # Weighting by the token count makes the epoch value the exact token mean, whatever the last batch's size.
        metric.update(self._ce(self.model(x), y), weight=y.numel())

    def _log_epoch(self, metric: MeanMetric, stage: str) -> None:
        loss = metric.compute()
        metric.reset()
        self.log(f"{stage}/loss", loss, prog_bar=True)
        self.log(f"{stage}/ppl", loss.exp())

    def on_validation_epoch_start(self) -> None:
        # A fresh state in this loop's grad mode: one left by `trainer.validate` (inference mode) cannot be
        # updated in place by the validation inside `fit`, which runs under no_grad.
        self.val_loss.reset()

    def on_test_epoch_start(self) -> None:
        self.test_loss.reset()

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch(self.val_loss, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss)

    def on_test_epoch_end(self) -> None:
        self._log_epoch(self.test_loss, "test")

    # ---- checkpoints ----

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Drop the teacher's weights; record the tokenizer (for `sample` and teachers) and the teacher path."""
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith("teacher.")]:
            del state[key]
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer_path", None)
        checkpoint[CHECKPOINT_KEY] = {
            "tokenizer_path": str(Path(tokenizer).resolve()) if tokenizer is not None else None,
            "tokenizer_sha256": _data_tokenizer_sha256(datamodule),
            "teacher_checkpoint": self.teacher_checkpoint,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Put the current teacher's weights back (resuming a distillation), so strict loading succeeds."""
        if self.teacher is not None:
            state = checkpoint["state_dict"]
            for key, value in self.teacher.state_dict().items():
                state.setdefault(f"teacher.{key}", value)


def _data_tokenizer_sha256(datamodule: Any) -> str | None:
    # meta.json records the tokenizer's hash once it is encoded; reading it beats hashing the file every time.
    data_dir = getattr(datamodule, "data_dir", None)
    if data_dir is None:
        return None
    meta_path = Path(data_dir) / META_NAME
    if not meta_path.is_file():
        return None
    return json.loads(meta_path.read_text()).get("tokenizer_sha256")


# ------------------------------------------------------------------------------------------------------ the CLI

# What `slm fit` uses where a config sets nothing (a search's chosen.yaml names only the model and data): the
# shipped configs' 300 steps (tiny, tiny_teacher and tiny_distill all train 300 steps), and
# a CSV logger under runs/slm, so every run has a metrics.csv and a versioned folder (checkpoints go to its
# checkpoints/ when checkpoint.dirpath is unset).
TRAINER_DEFAULTS: dict[str, Any] = {
    "trainer.max_steps": 300,
    "trainer.log_every_n_steps": 10,
    "trainer.default_root_dir": "runs/slm",
    "trainer.logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs/slm"}},
}


def lightning_main(args: Sequence[str] | None = None, run: bool = True) -> Any:
    """``slm fit|validate|test``: LightningCLI over `LanguageModel` and `slm.data.TextDataModule` (subclasses too).

    The model's ``arch.vocab_size`` sets the data's ``vocab_size`` (a link: the data's is not set by hand), so
    the tokenizer is trained for exactly the embedding table. A ModelCheckpoint on ``val/loss`` (``best.ckpt``
    and ``last.ckpt``) is always on; its options live under ``checkpoint.*``, and ``fit`` refuses to write over an
    earlier run's checkpoints unless ``--overwrite_checkpoints true``. A ``ckpt_path`` that is a URL or another
    remote location is refused before any class is built (`ondevice.checkpoint_paths.check_cli_ckpt_path`), since
    Lightning would fetch it and unpickle it in full. A config without trainer settings (a
    search's ``chosen.yaml``) gets `TRAINER_DEFAULTS`. Returns the LightningCLI; with
    ``run=False`` nothing runs (a leading ``fit``/``validate``/``test`` is dropped, since LightningCLI then takes
    no subcommand) and its model, datamodule and trainer are ready to drive by hand.
    """
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from slm.data import TextDataModule

    class SLMCLI(LightningCLI):
        def add_arguments_to_parser(self, parser: Any) -> None:
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": "val/loss",
                    "checkpoint.filename": "best",
                    "checkpoint.save_last": True,
                    "checkpoint.enable_version_counter": False,
                    **TRAINER_DEFAULTS,
                }
            )
            parser.add_argument(
                "--overwrite_checkpoints",
                type=bool,
                default=False,
                help="fit: write over the checkpoints an earlier run left in checkpoint.dirpath",
            )
            parser.link_arguments(
                "model.init_args.arch", "data.init_args.vocab_size", compute_fn=_arch_vocab_size, apply_on="parse"
            )

        def before_instantiate_classes(self) -> None:
            check_cli_ckpt_path(self)

        def before_fit(self) -> None:
            config = self.config[self.subcommand]
            if self.trainer.fast_dev_run or config.get("ckpt_path") or config.get("overwrite_checkpoints"):
                return  # fast_dev_run writes no checkpoint; a resumed fit continues its own run
            folders = [getattr(cb, "dirpath", None) for cb in self.trainer.checkpoint_callbacks]
            try:
                refuse_to_overwrite(folders, "*.ckpt", "--overwrite_checkpoints true")
            except FileExistsError as error:
                self.parser.error(f"slm fit: {error} (or set a new checkpoint.dirpath)")

    silence_lightning()
    args = None if args is None else list(args)
    if not run and args and args[0] in SUBCOMMANDS:
        args = args[1:]
    return SLMCLI(
        LanguageModel,
        TextDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _arch_vocab_size(arch: Any) -> int:
    # At parse time the arch is still a preset name or a jsonargparse Namespace: of the dataclass fields, or (read
    # back from a checkpoint's hyperparameters) a class_path/init_args pair naming ArchConfig.
    if hasattr(arch, "as_dict"):
        arch = arch.as_dict()
    if isinstance(arch, Mapping) and "init_args" in arch:
        arch = arch["init_args"]
    if isinstance(arch, Mapping):
        arch = {k: v for k, v in arch.items() if not k.startswith("__")}
    return resolve_arch(arch).vocab_size


# ------------------------------------------------------------------------------------------------------ sampling


def sample(checkpoint: str | os.PathLike, prompt: str = "", **options: Any) -> str:
    """The prompt continued by tokens sampled from a checkpoint of `slm fit`, as text; `options` are those of
    `sample_tokens` (max_new_tokens, temperature, top_k, seed, tokenizer, stop_at_eot)."""
    return sample_tokens(checkpoint, prompt, **options)[0]


def sample_tokens(
    checkpoint: str | os.PathLike,
    prompt: str = "",
    max_new_tokens: int = 64,
    temperature: float = 0.8,
    top_k: int | None = 40,
    *,
    seed: int = 0,
    tokenizer: str | os.PathLike | None = None,
    stop_at_eot: bool = False,
) -> tuple[str, list[int]]:
    """The prompt continued by ``max_new_tokens`` tokens sampled from a checkpoint of `slm fit`, as text, and the
    ids of the new tokens.

    The tokenizer is the one recorded in the checkpoint (its data dir's ``tokenizer.json``, checked by hash),
    or ``tokenizer`` if given. Generation starts after ``<|endoftext|>``, as every training document does.
    """
    from tokenizers import Tokenizer

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ckpt = read_checkpoint(checkpoint)
    model = load_gpt(ckpt, str(checkpoint)).eval()
    tok = Tokenizer.from_file(str(_tokenizer_path(ckpt, checkpoint, tokenizer)))
    eot = tok.token_to_id(EOT)
    ids = [eot, *tok.encode(prompt, add_special_tokens=False).ids]
    if max(ids) >= model.config.vocab_size:
        raise ValueError(
            f"the tokenizer has ids up to {max(ids)} but the model's vocab_size is {model.config.vocab_size}"
        )
    generator = torch.Generator().manual_seed(seed)
    out = model.generate(
        torch.tensor([ids]),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        generator=generator,
        eos_token=eot if stop_at_eot else None,
    )
    new = out[0, len(ids) :].tolist()
    return prompt + tok.decode(new, skip_special_tokens=False), new


def _tokenizer_path(ckpt: Mapping[str, Any], checkpoint: str | os.PathLike, given: str | os.PathLike | None) -> Path:
    if given is not None:
        path = Path(given)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer {path}: no such file")
        return path
    record = ckpt.get(CHECKPOINT_KEY) or {}
    recorded = record.get("tokenizer_path")
    if recorded is None:
        data_dir = (ckpt.get("datamodule_hyper_parameters") or {}).get("data_dir")
        if data_dir is None:
            raise ValueError(f"{checkpoint}: records no tokenizer; pass tokenizer=PATH (a data dir's {TOKENIZER_NAME})")
        recorded = Path(data_dir) / TOKENIZER_NAME
    path = Path(recorded)
    if not path.is_file():
        raise FileNotFoundError(
            f"{checkpoint}: its tokenizer {path} is gone; rebuild the data dir or pass tokenizer=PATH"
        )
    expected = record.get("tokenizer_sha256")
    if expected and sha256_file(path) != expected:
        raise ValueError(
            f"{checkpoint}: tokenizer {path} changed since training (sha256 differs from the recorded one); "
            "its ids would decode to other text"
        )
    return path
