"""Lightning's advert and the notices that do not apply to this project's runs, silenced in one place.

Every entry point that trains (``rfml`` and ``slm``'s LightningCLI, the demo, study workers) calls
:func:`silence_lightning` once; a study's many small trainings also use :func:`quiet_lightning`, which lowers
Lightning's loggers for the block so its banners do not break the study's progress bar. Real warnings stay on:
only the notices listed below, each with the reason it does not apply, are filtered.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path

# Trainer options of a study's runs: no progress bar, no model summary (the study reports its own progress).
QUIET_TRAINER_ARGS = {"enable_progress_bar": False, "enable_model_summary": False}

NOTICES = (
    r".*does not have many workers.*",  # batches come from memory; workers would only add start-up time
    r".*number of training batches.*",  # a single-SNR training set is a few batches by design
    r".*IterableDataset. has .__len__. defined.*",  # SignalDataModule's loaders know their exact length
    r".*module\(s\) in eval mode at the start of training.*",  # SKD keeps its teacher in eval mode on purpose
    r".*LeafSpec.*",  # a deprecation inside torch's pytree, raised through Lightning
    r".*LightningCLI's args parameter is intended.*",  # the ISM study drives `rfml fit` from code on purpose
    r".*Couldn't infer the batch indices.*",  # rfml's prediction writer keeps loader order; it needs no indices
)
# Lightning's adverts for its cloud products (logged at INFO by the callback and logger connectors): not a
# notice about the run at all.
ADVERTS = ("litmodels", "litlogger")
LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero")


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f"[{name}](" in message for name in ADVERTS)


_NO_ADVERTS = _NoAdverts()


def silence_lightning(banners: bool = False) -> None:
    """Filter the notices and adverts above, for the rest of the process (or of an enclosing
    ``warnings.catch_warnings``). Idempotent. Lightning's other log lines (``GPU available …``) are kept, unless
    ``banners``: then its loggers are lowered to warnings too (the demo, whose output is its own)."""
    for pattern in NOTICES:
        warnings.filterwarnings("ignore", message=pattern)
    # "Seed set to N" repeats the config's seed_everything; on a failed run it sat above the one-line error.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _NO_ADVERTS not in logger.filters:
            logger.addFilter(_NO_ADVERTS)
        if banners:
            logger.setLevel(logging.WARNING)


@contextlib.contextmanager
def quiet_lightning(log_path: Path | None = None) -> Iterator[None]:
    """:func:`silence_lightning` and Lightning's loggers lowered to warnings for the duration of the block,
    restoring the warning filters and logger levels after it; with ``log_path``, what is printed inside the block
    (Lightning's banners) is appended to that file."""
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [lg.level for lg in loggers]
    with contextlib.ExitStack() as stack:
        stack.enter_context(warnings.catch_warnings())
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            sink = stack.enter_context(open(log_path, "a"))
            stack.enter_context(contextlib.redirect_stdout(sink))
        silence_lightning(banners=True)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)
