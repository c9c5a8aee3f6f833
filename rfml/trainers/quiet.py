"""Lightning's notices that do not apply to a study's many small trainings (or the demo's), silenced in one place.

The studies train on in-memory batch plans with no loader workers and few batches, through a LightningCLI given
its arguments in code: Lightning warns about each of these every run. A study prints one line per run instead.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

# Trainer options of a study's runs: no progress bar, no model summary (the study reports its own progress).
QUIET_TRAINER_ARGS = {"enable_progress_bar": False, "enable_model_summary": False}

_NOTICES = (
    r".*does not have many workers.*",  # batches come from memory; workers would only add start-up time
    r".*number of training batches.*",  # a single-SNR training set is a few batches by design
    r".*IterableDataset. has .__len__. defined.*",  # SignalDataModule's loaders know their exact length
    r".*module\(s\) in eval mode at the start of training.*",  # SKD keeps its teacher in eval mode on purpose
    r".*LeafSpec.*",  # a deprecation inside torch's pytree, raised through Lightning
    r".*LightningCLI's args parameter is intended.*",  # the ISM study drives `rfml fit` from code on purpose
)
_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero")


def silence_lightning() -> None:
    """Filter the notices above and lower Lightning's loggers to warnings, for the rest of the process (or of an
    enclosing ``warnings.catch_warnings``)."""
    for pattern in _NOTICES:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextlib.contextmanager
def quiet_lightning(log_path: Path | None = None) -> Iterator[None]:
    """:func:`silence_lightning` for the duration of the block, restoring the warning filters and logger levels
    after it; with ``log_path``, what is printed inside the block (Lightning's banners) is appended to that file."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    levels = [lg.level for lg in loggers]
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            sink = stack.enter_context(open(log_path, "a"))
            stack.enter_context(contextlib.redirect_stdout(sink))
        silence_lightning()
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
