"""Session fixtures shared by several test modules: work that costs seconds is done once per test run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

# One torch thread in this process and in every process a test starts (CLI subprocesses, DDP ranks, packaging
# checks): `make test` runs two pytest-xdist workers on two cores, and two threads each would oversubscribe them.
# A caller's explicit OMP_NUM_THREADS is kept.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_executor() -> Iterator[Any]:
    """One local Ray instance of 2 CPUs for the whole run (starting Ray costs seconds); tasks of one thread.

    Skipped where Ray is not installed, or already initialised by someone else (these tests start their own).
    """
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process; these tests start their own instance")
    import _study_tasks

    from rfml.studies.executor import RayExecutor

    # the test tasks live in tests/, which Ray's workers cannot import: send them by value
    ray.cloudpickle.register_pickle_by_value(_study_tasks)
    try:
        with RayExecutor(threads=1, num_cpus=2) as executor:
            yield executor
    finally:
        ray.cloudpickle.unregister_pickle_by_value(_study_tasks)
    assert not ray.is_initialized()  # the executor started Ray, so it shut it down


@pytest.fixture(scope="session")
def snr_toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every experiment of the SNR study, run once in this process on the crafted two-SNR toy set
    (``_study_tasks.write_toy_rml``): ``{"root", "data", "config", "study", "results"}``."""
    from _study_tasks import toy_config, write_toy_rml

    from rfml.studies.snr.config import SNRStudyConfig
    from rfml.studies.snr.study import Study, run_experiments

    root: Path = tmp_path_factory.mktemp("snr_study")
    data = write_toy_rml(str(root / "toy.pkl"))
    config = SNRStudyConfig.from_dict(toy_config(data, offsets=[-10, 0, 10]))
    study = Study(config, root / "out", progress=False)
    results = run_experiments(study, ["all"])
    return {"root": root, "data": data, "config": config, "study": study, "results": results}
