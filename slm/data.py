"""Text data for pre-training small decoder-only LMs: corpus files, a byte-level BPE tokenizer, flat token files
and a LightningDataModule that serves next-token windows from them."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ondevice.io import atomic_path, sha256_file, write_json_atomic

EOT = "<|endoftext|>"
SPECIAL_TOKENS = (EOT,)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)
DEFAULT_SUFFIXES = (".txt", ".md", ".py", ".rst")
TOKENIZER_NAME = "tokenizer.json"
META_NAME = "meta.json"
_EXCLUDED_PARTS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
_ENCODE_CHUNK = 256  # documents per encode call: enough to keep every core busy, few enough to bound memory


# ------------------------------------------------------------------------------------------------ corpus


def default_corpus() -> list[Path]:
    """The installed standard library's ``.py`` sources (tests and third-party packages left out), sorted.

    Every machine with Python has it, so demos and tests need no download.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    # Parts are taken relative to the root so that a stdlib installed under, say, /opt/test/ is not excluded whole.
    return sorted(p for p in root.rglob("*.py") if p.is_file() and not _EXCLUDED_PARTS & set(p.relative_to(root).parts))


def corpus_files(paths: Sequence[str | os.PathLike] | None, suffixes: Sequence[str] = DEFAULT_SUFFIXES) -> list[Path]:
    """The files of a corpus: each path given is a file, or a folder walked recursively for ``suffixes``.

    ``None`` means `default_corpus`. Files given by name are taken whatever their suffix; a file reached twice
    is kept once, at its first place.
    """
    if paths is None:
        return default_corpus()
    if isinstance(paths, str | os.PathLike):
        # A bare string is a Sequence too; iterating it would yield one path per character.
        paths = [paths]
    if not paths:
        raise ValueError("no corpus paths given; pass files or folders, or None for the standard library sources")
    wanted = tuple(s.lower() for s in suffixes)
    found: dict[Path, None] = {}
    for given in paths:
        path = Path(given)
        if path.is_file():
            found.setdefault(path, None)
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
            if not files:
                raise ValueError(f"{path}: no files with suffix {', '.join(wanted)} in this folder")
            found.update(dict.fromkeys(files))
        else:
            raise FileNotFoundError(f"{path}: no such corpus file or folder")
    return list(found)


def read_document(path: str | os.PathLike) -> str:
    """A corpus file's text; undecodable bytes become U+FFFD so one odd file cannot stop a run."""
    return Path(path).read_text(encoding="utf-8", errors="replace")


def files_digest(files: Sequence[str | os.PathLike]) -> str:
    """sha256 over the files' resolved paths and sizes, in the order given (the order decides the split)."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f).resolve()}\0{os.path.getsize(f)}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------- tokenizer


def check_vocab_size(vocab_size: int) -> None:
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB_SIZE} "
            f"(256 bytes + {len(SPECIAL_TOKENS)} special token)"
        )


def train_tokenizer(files: Sequence[str | os.PathLike], vocab_size: int, out_path: str | os.PathLike) -> Tokenizer:
    """Train a byte-level BPE tokenizer on ``files`` and save it as JSON at ``out_path`` (atomically).

    Every byte has a token, so any text encodes and decodes back exactly. ``<|endoftext|>`` is id 0.
    ``vocab_size`` is an upper bound: on a small corpus BPE runs out of pairs to merge and stops early, so
    ``get_vocab_size()`` may be smaller. Size a model's embedding by the requested ``vocab_size``.
    """
    check_vocab_size(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    # No prefix space: it would add a character that decoding keeps, breaking the exact round trip.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=sys.stderr.isatty(),
    )
    tokenizer.train_from_iterator((read_document(f) for f in files), trainer=trainer, length=len(files))
    with atomic_path(out_path) as tmp:
        tokenizer.save(str(tmp))
    return tokenizer


# ------------------------------------------------------------------------------------------- token files


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id below ``vocab_size``."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def split_documents(n_docs: int, val_fraction: float, seed: int) -> list[bool]:
    """Which documents go to validation: a seeded shuffle, at least one document on each side when n_docs >= 2."""
    if n_docs < 2:
        return [False] * n_docs
    n_val = min(max(1, round(n_docs * val_fraction)), n_docs - 1)
    is_val = [False] * n_docs
    for i in np.random.default_rng(seed).permutation(n_docs)[:n_val]:
        is_val[int(i)] = True
    return is_val


def encode_corpus(
    files: Sequence[str | os.PathLike],
    tokenizer_path: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    val_fraction: float = 0.05,
    seed: int = 0,
    extra_meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Tokenize ``files`` into ``out_path``/``train.bin`` and ``val.bin``, and describe them in ``meta.json``.

    The ``.bin`` files are flat arrays of token ids (``meta["dtype"]``, native byte order, no header) for
    ``np.memmap``; each document ends with ``<|endoftext|>``. Validation takes whole documents (see
    `split_documents`); a corpus of one document is split inside it, at ``1 - val_fraction`` of its tokens.
    ``meta.json`` is written last, so its presence means the other files are complete; ``extra_meta`` is
    merged into it. Returns the meta dict.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
    if not files:
        raise ValueError("no files to encode")
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    eot_id = tokenizer.token_to_id(EOT)
    if eot_id is None:
        raise ValueError(f"{tokenizer_path}: tokenizer has no {EOT} token; train it with train_tokenizer")
    vocab_size = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab_size)
    is_val = split_documents(len(files), val_fraction, seed)
    out = Path(out_path)
    counts = {"train": 0, "val": 0}
    # The stack unwinds in reverse, so each file is closed (flushed) before atomic_path renames it into place.
    with ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_path(out / f"{name}.bin")) for name in counts}
        sinks = {name: stack.enter_context(open(path, "wb")) for name, path in tmp.items()}

        def write(name: str, ids: np.ndarray) -> None:
            ids.tofile(sinks[name])
            counts[name] += ids.size

        with tqdm(total=len(files), desc="encode", unit="file", disable=None) as bar:
            for start in range(0, len(files), _ENCODE_CHUNK):
                chunk = files[start : start + _ENCODE_CHUNK]
                # The fast variant skips character offsets, which are never used here; it is over twice as fast.
                encodings = tokenizer.encode_batch_fast([read_document(f) for f in chunk], add_special_tokens=False)
                for i, enc in enumerate(encodings, start):
                    ids = np.array([*enc.ids, eot_id], dtype=dtype)
                    if len(files) == 1:
                        cut = int(ids.size * (1 - val_fraction))
                        write("train", ids[:cut])
                        write("val", ids[cut:])
                    else:
                        write("val" if is_val[i] else "train", ids)
                bar.update(len(chunk))
    meta = {
        "dtype": dtype.name,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "vocab_size": vocab_size,
        "eot_id": eot_id,
        "tokenizer": str(tokenizer_path),
        "tokenizer_sha256": sha256_file(tokenizer_path),
        "n_files": len(files),
        "files": [str(f) for f in files],
        "val_files": [str(f) for f, v in zip(files, is_val, strict=True) if v],
        "files_digest": files_digest(files),
        "val_fraction": val_fraction,
        "seed": seed,
        **(extra_meta or {}),
    }
    write_json_atomic(out / META_NAME, meta)
    return meta


class TokenDataset(Dataset):
    """Next-token windows over a flat token file: item i is ``(x, y)``, int64 of length ``block_size``, y = x
    shifted by one. Windows start every ``stride`` tokens (default ``block_size``: no overlap).

    The memmap opens on first access and is never pickled, so each DataLoader worker opens its own.
    """

    def __init__(
        self, path: str | os.PathLike, block_size: int, dtype: str = "uint16", stride: int | None = None
    ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size={block_size} must be >= 1")
        self.path = Path(path)
        self.block_size = block_size
        self.stride = block_size if stride is None else stride
        if self.stride < 1:
            raise ValueError(f"stride={self.stride} must be >= 1")
        self.dtype = np.dtype(dtype)
        size = self.path.stat().st_size
        if size % self.dtype.itemsize:
            raise ValueError(f"{self.path}: {size} bytes is not a whole number of {self.dtype.name} tokens")
        self.n_tokens = size // self.dtype.itemsize
        if self.n_tokens < block_size + 1:
            raise ValueError(
                f"{self.path}: {self.n_tokens} tokens, fewer than block_size + 1 = {block_size + 1}; "
                "use a larger corpus or val_fraction, or a smaller block_size"
            )
        self._data: np.memmap | None = None

    def __len__(self) -> int:
        return (self.n_tokens - 1 - self.block_size) // self.stride + 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} windows")
        if self._data is None:
            self._data = np.memmap(self.path, dtype=self.dtype, mode="r")
        start = index * self.stride
        window = torch.from_numpy(self._data[start : start + self.block_size + 1].astype(np.int64))
        return window[:-1], window[1:]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}


# ------------------------------------------------------------------------------------------- data module


class TextDataModule(L.LightningDataModule):
    """A text corpus as next-token batches: trains the tokenizer and encodes the corpus once into ``data_dir``.

    ``corpus``: files or folders (None: the standard library's sources); ``max_files`` keeps the first N.
    ``vocab_size`` is the requested upper bound (the tokenizer may have fewer tokens); size models by it.
    A cache in ``data_dir`` is reused when its meta.json matches the corpus files (paths and sizes),
    ``vocab_size``, ``val_fraction`` and ``seed`` and its files are intact; otherwise it is rebuilt.
    """

    def __init__(
        self,
        corpus: list[str] | None = None,
        data_dir: str = "runs/slm_data",
        vocab_size: int = 2048,
        block_size: int = 128,
        batch_size: int = 16,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        max_files: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_vocab_size(vocab_size)
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction={val_fraction} must be in (0, 1)")
        if max_files is not None and max_files < 1:
            raise ValueError(f"max_files={max_files} must be >= 1 or None")
        self.save_hyperparameters()
        self.corpus = corpus
        self.data_dir = Path(data_dir)
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_fraction = val_fraction
        self.max_files = max_files
        self.seed = seed
        self.train_set: TokenDataset | None = None
        self.val_set: TokenDataset | None = None

    @property
    def tokenizer_path(self) -> Path:
        return self.data_dir / TOKENIZER_NAME

    @property
    def meta_path(self) -> Path:
        return self.data_dir / META_NAME

    @property
    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(str(self.tokenizer_path))

    def files(self) -> list[Path]:
        return corpus_files(self.corpus)[: self.max_files]

    def _cache_key(self, files: Sequence[Path]) -> dict[str, Any]:
        return {
            "requested_vocab_size": self.vocab_size,
            "files_digest": files_digest(files),
            "val_fraction": self.val_fraction,
            "seed": self.seed,
        }

    def _read_meta(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.meta_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _cache_valid(self, meta: Mapping[str, Any], key: Mapping[str, Any]) -> bool:
        if any(meta.get(k) != v for k, v in key.items()):
            return False
        # The key can match files that were changed or truncated since; check they are what meta describes.
        itemsize = np.dtype(meta["dtype"]).itemsize
        for name in ("train", "val"):
            path = self.data_dir / f"{name}.bin"
            if not path.is_file() or path.stat().st_size != meta[f"{name}_tokens"] * itemsize:
                return False
        return self.tokenizer_path.is_file() and sha256_file(self.tokenizer_path) == meta["tokenizer_sha256"]

    def prepare_data(self) -> None:
        files = self.files()
        key = self._cache_key(files)
        meta = self._read_meta()
        if meta is not None and self._cache_valid(meta, key):
            return
        # Drop the old meta first: a run stopped half way must not leave it vouching for new, mixed files.
        self.meta_path.unlink(missing_ok=True)
        train_tokenizer(files, self.vocab_size, self.tokenizer_path)
        encode_corpus(
            files,
            self.tokenizer_path,
            self.data_dir,
            val_fraction=self.val_fraction,
            seed=self.seed,
            extra_meta=key,
        )

    def setup(self, stage: str | None = None) -> None:
        meta = self._read_meta()
        if meta is None:
            raise FileNotFoundError(f"{self.meta_path}: no encoded corpus here; call prepare_data() first")
        self.train_set = TokenDataset(self.data_dir / "train.bin", self.block_size, meta["dtype"])
        self.val_set = TokenDataset(self.data_dir / "val.bin", self.block_size, meta["dtype"])

    def _loader(self, dataset: TokenDataset | None, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=torch.Generator().manual_seed(self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
