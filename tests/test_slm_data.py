"""slm.data: corpus discovery, byte-level BPE round trip, token files, next-token windows and the DataModule cache."""

from __future__ import annotations

import json
import pickle
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonargparse import ArgumentParser
from tokenizers import Tokenizer

from slm.data import (
    MIN_VOCAB_SIZE,
    TextDataModule,
    TokenDataset,
    corpus_files,
    default_corpus,
    encode_corpus,
    train_tokenizer,
)

CODE = "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int = 0\n    y: int = 0\n"
PROSE = "The quick brown fox jumps over the lazy dog. Über Größe und Maß: naïve café.\n"
MIXED = "ü 漢字 🚀 — tabs\tand\r\nCRLF lines\n"


def write_docs(folder: Path, n: int) -> list[Path]:
    """``n`` documents of different lengths and kinds (code, prose, non-ASCII), named so they sort in order."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds = (CODE, PROSE, MIXED)
    paths = []
    for i in range(n):
        path = folder / f"doc{i:02d}.txt"
        path.write_text(f"# document {i}\n" + kinds[i % 3] * (3 + 2 * i), encoding="utf-8")
        paths.append(path)
    return paths


def encode_doc(tokenizer: Tokenizer, path: Path) -> list[int]:
    return [*tokenizer.encode(path.read_text(encoding="utf-8")).ids, tokenizer.token_to_id("<|endoftext|>")]


def test_default_corpus_is_sorted_stdlib_sources_without_tests() -> None:
    files = default_corpus()
    root = Path(sysconfig.get_paths()["stdlib"])
    assert len(files) > 100
    assert all(f.suffix == ".py" and f.is_file() for f in files)
    assert files == sorted(set(files))
    for f in files:
        assert not {"test", "tests", "site-packages", "__pycache__"} & set(f.relative_to(root).parts), f
    assert root / "json" / "decoder.py" in files


def test_corpus_files_walks_folders_by_suffix_and_keeps_named_files(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for name in ("a/z.md", "a/deep/b.py", "a/c.TXT", "a/skip.bin", "a/deep/skip.pyc"):
        (tmp_path / name).write_text("x")
    extra = tmp_path / "notes.log"
    extra.write_text("y")
    files = corpus_files([tmp_path / "a", str(extra), tmp_path / "a" / "z.md"])
    # Folder: recursive, suffix-filtered (case-insensitively), sorted; a named file is kept whatever its suffix,
    # and a file reached twice appears once.
    assert files == [tmp_path / "a/c.TXT", tmp_path / "a/deep/b.py", tmp_path / "a/z.md", extra]
    assert corpus_files(str(tmp_path / "a"), suffixes=(".py",)) == [tmp_path / "a/deep/b.py"]
    assert corpus_files(None) == default_corpus()


def test_corpus_files_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "corpus"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        corpus_files([missing])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "data.bin").write_bytes(b"\0")
    with pytest.raises(ValueError, match=re.escape(str(empty)) + r".*\.txt, \.md, \.py, \.rst"):
        corpus_files([empty])


def test_tokenizer_round_trips_any_text_and_respects_the_vocab_bound(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "corpus", 3)
    out = tmp_path / "tok" / "tokenizer.json"
    tokenizer = train_tokenizer(docs, 300, out)
    assert tokenizer.get_vocab_size() <= 300
    assert tokenizer.token_to_id("<|endoftext|>") == 0
    # Bytes and characters never seen in training still round-trip: every byte has a token.
    text = CODE + PROSE + MIXED + "Ωμέγα \x00\x7f\x1b[0m 🦀 ℕ  double  spaces\n\n"
    ids = tokenizer.encode(text).ids
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # the merges compress
    loaded = Tokenizer.from_file(str(out))
    assert loaded.encode(text).ids == ids
    assert sorted(p.name for p in out.parent.iterdir()) == ["tokenizer.json"]  # no temporary left behind


def test_tokenizer_vocab_is_an_upper_bound_and_has_a_minimum(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "corpus", 2)
    # A tiny corpus runs out of pairs long before 5000 tokens.
    assert 257 <= train_tokenizer(docs, 5000, tmp_path / "big.json").get_vocab_size() < 5000
    assert train_tokenizer(docs, MIN_VOCAB_SIZE, tmp_path / "min.json").get_vocab_size() == 257
    with pytest.raises(ValueError, match="at least 257"):
        train_tokenizer(docs, 256, tmp_path / "small.json")
    assert not (tmp_path / "small.json").exists()


def test_encode_corpus_splits_by_whole_documents(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "corpus", 5)
    tok_path = tmp_path / "tokenizer.json"
    tokenizer = train_tokenizer(docs, 300, tok_path)
    meta = encode_corpus(docs, tok_path, tmp_path / "out", val_fraction=0.4, seed=3)
    assert meta == json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["dtype"] == "uint16"
    assert meta["n_files"] == 5 and meta["vocab_size"] == tokenizer.get_vocab_size()
    val = [Path(f) for f in meta["val_files"]]
    train = [d for d in docs if d not in val]
    assert len(val) == 2 and set(val) <= set(docs)
    # Each file holds exactly its documents' tokens, each followed by <|endoftext|>, in corpus order.
    for name, split in (("train", train), ("val", val)):
        stored = np.fromfile(tmp_path / "out" / f"{name}.bin", dtype=np.uint16)
        expected = [t for d in split for t in encode_doc(tokenizer, d)]
        assert stored.tolist() == expected
        assert meta[f"{name}_tokens"] == len(expected)
    assert meta["train_tokens"] + meta["val_tokens"] == sum(len(encode_doc(tokenizer, d)) for d in docs)
    # The shuffle is seeded.
    again = encode_corpus(docs, tok_path, tmp_path / "again", val_fraction=0.4, seed=3)
    assert again["val_files"] == meta["val_files"]


def test_encode_corpus_keeps_a_document_on_each_side(tmp_path: Path) -> None:
    docs = write_docs(tmp_path / "corpus", 2)
    tok_path = tmp_path / "tokenizer.json"
    tokenizer = train_tokenizer(docs, 300, tok_path)
    meta = encode_corpus(docs, tok_path, tmp_path / "two", val_fraction=0.01)
    assert len(meta["val_files"]) == 1
    assert meta["train_tokens"] > 0 and meta["val_tokens"] > 0
    # One document: split inside it at 1 - val_fraction of its tokens.
    meta = encode_corpus(docs[1:], tok_path, tmp_path / "one", val_fraction=0.25)
    ids = encode_doc(tokenizer, docs[1])
    cut = int(len(ids) * 0.75)
    assert np.fromfile(tmp_path / "one" / "train.bin", dtype=np.uint16).tolist() == ids[:cut]
    assert np.fromfile(tmp_path / "one" / "val.bin", dtype=np.uint16).tolist() == ids[cut:]
    assert meta["val_files"] == []


def test_token_dataset_windows(tmp_path: Path) -> None:
    path = tmp_path / "tokens.bin"
    raw = np.random.default_rng(0).integers(0, 60000, size=103, dtype=np.uint16)
    raw.tofile(path)
    ds = TokenDataset(path, block_size=10)
    assert len(ds) == (103 - 1) // 10 == 10
    for i in (0, 4, len(ds) - 1):
        x, y = ds[i]
        assert x.dtype == y.dtype == torch.int64 and x.shape == y.shape == (10,)
        assert x.tolist() == raw[i * 10 : i * 10 + 10].tolist()
        assert y.tolist() == raw[i * 10 + 1 : i * 10 + 11].tolist()
    with pytest.raises(IndexError):
        ds[len(ds)]
    overlapping = TokenDataset(path, block_size=10, stride=5)
    assert len(overlapping) == (103 - 1 - 10) // 5 + 1 == 19
    assert overlapping[18][1].tolist() == raw[91:101].tolist()
    # The memmap is per process: a pickled dataset carries none and opens its own.
    copy = pickle.loads(pickle.dumps(ds))
    assert copy._data is None
    assert copy[3][0].tolist() == ds[3][0].tolist()


def test_token_dataset_rejects_a_short_file(tmp_path: Path) -> None:
    path = tmp_path / "short.bin"
    np.arange(10, dtype=np.uint16).tofile(path)
    with pytest.raises(ValueError, match=r"short\.bin: 10 tokens, fewer than block_size \+ 1 = 11"):
        TokenDataset(path, block_size=10)
    assert len(TokenDataset(path, block_size=9)) == 1


def make_module(tmp_path: Path, **kwargs: object) -> TextDataModule:
    corpus = tmp_path / "corpus"
    if not corpus.exists():
        write_docs(corpus, 6)
    args = {
        "corpus": [str(corpus)],
        "data_dir": str(tmp_path / "data"),
        "vocab_size": 300,
        "block_size": 16,
        "batch_size": 4,
        "val_fraction": 0.2,
    }
    return TextDataModule(**{**args, **kwargs})  # type: ignore[arg-type]


def stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


def test_data_module_reuses_its_cache_and_rebuilds_when_it_is_stale(tmp_path: Path) -> None:
    dm = make_module(tmp_path)
    dm.prepare_data()
    data = tmp_path / "data"
    files = [data / n for n in ("tokenizer.json", "train.bin", "val.bin", "meta.json")]
    before = [stamp(f) for f in files]
    make_module(tmp_path).prepare_data()
    assert [stamp(f) for f in files] == before

    # A different vocab_size retrains (os.replace gives the new file a new inode).
    bigger = make_module(tmp_path, vocab_size=320)
    bigger.prepare_data()
    assert stamp(data / "tokenizer.json")[0] != before[0][0]
    meta = json.loads((data / "meta.json").read_text())
    assert meta["requested_vocab_size"] == 320 and meta["vocab_size"] <= 320

    # A damaged token file is noticed even though the settings match.
    with open(data / "train.bin", "r+b") as fh:
        fh.truncate(10)
    bigger.prepare_data()
    assert (data / "train.bin").stat().st_size == 2 * meta["train_tokens"]

    # So is a changed corpus file (its size is part of the key).
    with open(tmp_path / "corpus" / "doc00.txt", "a") as fh:
        fh.write("more text\n")
    bigger.prepare_data()
    assert json.loads((data / "meta.json").read_text())["files_digest"] != meta["files_digest"]
    assert not [p.name for p in data.iterdir() if ".partial" in p.name]


def test_data_module_batches(tmp_path: Path) -> None:
    dm = make_module(tmp_path, max_files=5)
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        dm.setup("fit")
    dm.prepare_data()
    dm.setup("fit")
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["n_files"] == 5 and len(meta["val_files"]) == 1
    assert dm.vocab_size == 300 and dm.tokenizer.get_vocab_size() <= 300
    assert dm.hparams["block_size"] == 16

    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert int(x.max()) < dm.tokenizer.get_vocab_size() and int(x.min()) >= 0
    assert torch.equal(x[:, 1:], y[:, :-1])
    # Shuffling is seeded: a fresh module serves the same first batch; validation is in file order.
    twin = make_module(tmp_path, max_files=5)
    twin.setup("fit")
    assert torch.equal(next(iter(twin.train_dataloader()))[0], x)
    vx, _ = next(iter(dm.val_dataloader()))
    assert torch.equal(vx, torch.stack([dm.val_set[i][0] for i in range(len(vx))]))  # type: ignore[index]


def test_data_module_from_config(tmp_path: Path) -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(TextDataModule, "data")
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    config = f"data:\n  corpus: [{tmp_path}]\n  vocab_size: 512\n  max_files: 3\n"
    dm = instantiate(parser.parse_string(config)).data
    assert isinstance(dm, TextDataModule)
    assert dm.corpus == [str(tmp_path)] and dm.vocab_size == 512 and dm.max_files == 3
    with pytest.raises(ValueError, match="at least 257"):
        TextDataModule(vocab_size=100)
