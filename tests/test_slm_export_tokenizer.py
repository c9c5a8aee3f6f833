"""`slm.export.export_checkpoint`: an `slm fit` checkpoint's graphs ship with the tokenizer it was trained with."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from ondevice.device.runner import ort_session
from ondevice.io import sha256_file
from slm.export import export_checkpoint
from slm.train import lightning_main

CONFIGS = Path(__file__).resolve().parents[1] / "slm" / "configs"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`slm fit -c tiny.yaml` for two steps on 20 stdlib files (the tokenizer is trained on them first)."""
    work = tmp_path_factory.mktemp("slm_export")
    previous = os.getcwd()
    os.chdir(work)  # the config's relative data and run folders land here
    try:
        args = ["fit", "-c", str(CONFIGS / "tiny.yaml"), "--data.init_args.max_files", "20"]
        args += ["--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1"]
        args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
        args += ["--checkpoint.dirpath", str(work / "ckpts")]
        cli = lightning_main(args)
        yield Path(cli.trainer.checkpoint_callback.best_model_path)
    finally:
        os.chdir(previous)


def test_export_copies_the_trained_tokenizer_beside_the_graphs(checkpoint: Path, tmp_path: Path) -> None:
    result = export_checkpoint(checkpoint, tmp_path / "out")
    assert result.tokenizer == tmp_path / "out" / "tokenizer.json"
    assert result.tokenizer.parent == result.files["prefill"].parent == result.files["decode"].parent
    recorded = torch.load(checkpoint, map_location="cpu", weights_only=True)["slm"]
    assert sha256_file(result.tokenizer) == recorded["tokenizer_sha256"]
    assert result.vocab_ok and result.tokenizer_vocab_size == result.model_vocab_size == 512
    assert Tokenizer.from_file(str(result.tokenizer)).get_vocab_size() == 512
    assert "= the model's 512" in result.verification_line()
    # The graphs take the tokenizer's ids: encode a prompt and prefill it.
    ids = Tokenizer.from_file(str(result.tokenizer)).encode("def main():").ids
    session = ort_session(result.files["prefill"], threads=1)
    logits = session.run(None, {session.get_inputs()[0].name: np.asarray([ids], dtype=np.int64)})[0]
    assert logits.shape == (1, 512) and np.isfinite(logits).all()
    assert not list((tmp_path / "out").glob("*.partial"))


def test_a_tokenizer_of_another_vocabulary_is_an_error(checkpoint: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    tokenizer = Tokenizer.from_file(str(torch.load(checkpoint, weights_only=True)["slm"]["tokenizer_path"]))
    tokenizer.add_tokens(["<extra-a>", "<extra-b>"])
    tokenizer.save(str(other))
    with pytest.raises(ValueError, match=r"other\.json: the tokenizer has 514 tokens .* has 512"):
        export_checkpoint(checkpoint, tmp_path / "out", tokenizer=other)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_a_changed_tokenizer_file_is_refused_by_its_recorded_hash(checkpoint: Path, tmp_path: Path) -> None:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state["slm"]["tokenizer_sha256"] = "0" * 64
    edited = tmp_path / "edited.ckpt"
    torch.save(state, edited)
    with pytest.raises(ValueError, match=r"edited\.ckpt: .* is not the tokenizer it was trained with"):
        export_checkpoint(edited, tmp_path / "out")


def test_a_missing_checkpoint_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt: no such checkpoint"):
        export_checkpoint(tmp_path / "missing.ckpt", tmp_path / "out")
