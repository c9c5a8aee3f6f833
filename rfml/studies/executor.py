"""Where a study's trainings run: a local process pool, the calling process, or a Ray cluster.

A study is hundreds of small independent trainings. Every executor offers the same call::

    with make_executor("local", workers=None, threads=1, address=None) as ex:
        for item, result in ex.map_unordered(fn, items):
            ...  # each item with its result, in the order the tasks finish

``fn`` is a top-level function (pickled by reference, so the workers must be able to import its module) taking one
JSON-like dict. Each task sees ``threads`` torch threads, so ``workers × threads`` should not exceed the cores.

A task that raises stops the submission of new tasks; the tasks already running finish and are yielded (a study
records them), then :class:`TaskError` is raised naming the failed item, with the worker's traceback attached
(``remote_traceback``, also chained as the error's cause so an uncaught error prints it).

- :class:`LocalExecutor`: a ``spawn`` process pool (torch and ``fork`` do not mix), or ``workers=0`` to run each task
  in the calling process, one after the other (debugging, tests).
- :class:`RayExecutor`: Ray tasks reserving ``threads`` CPUs each, on a cluster (``address``) or a local instance.
  Ray is an optional extra, imported only here.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import pickle
import sys
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from rfml.studies.machine import machine_info

EXECUTOR_KINDS = ("local", "ray")
RAY_MISSING = "ray is not installed: pip install 'ondevice[ray]'"
_ITEM_LABEL_CHARS = 300

log = logging.getLogger(__name__)

Task = Callable[[Any], Any]
Outcome = tuple[bool, Any, str]  # (succeeded, result or error message, traceback text)
_E = TypeVar("_E", bound="Executor")


class TaskError(RuntimeError):
    """A task raised (or its worker died): the item it ran on, the error message and the worker's traceback."""

    def __init__(self, item: Any, message: str, remote_traceback: str = "") -> None:
        self.item = item
        self.message = message
        self.remote_traceback = remote_traceback
        super().__init__(f"task {item_label(item)} failed: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.item, self.message, self.remote_traceback)


class RemoteTraceback(Exception):
    """The traceback text of a failed task, chained as a :class:`TaskError`'s cause so that it is printed with it."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def item_label(item: Any) -> str:
    """A short one-line text naming ``item`` in messages (its JSON, cut at a few hundred characters)."""
    try:
        text = json.dumps(item, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(item)
    return text if len(text) <= _ITEM_LABEL_CHARS else text[: _ITEM_LABEL_CHARS - 1] + "…"


# -- what runs in the workers ---------------------------------------------------------------------------------------


def _set_threads(threads: int) -> None:
    """Give this worker process ``threads`` intra-op torch threads and one inter-op thread."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # settable once, and only before any inter-op parallel work; the default is harmless
            pass


def _die_with_parent() -> None:
    """On Linux, have the kernel SIGKILL this worker when the study's process dies (``kill -9``, the OOM killer):
    otherwise a worker in the middle of a long training runs on, orphaned, and takes the cores of the study that
    resumes.

    The parent-death signal is SIGKILL because it is the one signal nothing in the worker can intercept. SIGTERM was
    caught by Lightning's handler, which only sets a flag and raises ``SIGTERMException`` (a ``SystemExit``) at the
    next batch; the pool's worker loop catches that like any task failure and waits for the next task, so the
    orphan finished its epoch, wrote a model and idled for ever with PPID 1. Catching ``BaseException`` around the
    task instead would still depend on every library's handler raising promptly, and on the main thread returning
    to Python (a handler never runs inside a long C call). Nothing is lost by not cleaning up: a worker writes only
    its model file, through :func:`ondevice.io.atomic_path` (a hidden ``.KEY.*.partial.pt`` beside it may remain,
    never a torn ``KEY.pt``), and the study's results log is written by the study's own process; its runs are
    trained again when the study resumes.
    """
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # no prctl: the worker then ends when it next finds the pool gone
        pass
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid != os.getppid():  # the study died before prctl: no signal will come
        os._exit(1)


def _init_worker(threads: int) -> None:
    """Initializer of every process of a :class:`LocalExecutor` pool (Lightning's known notices silenced once)."""
    from ondevice.quiet import silence_lightning

    _die_with_parent()
    _set_threads(threads)
    silence_lightning()


def _apply(fn: Task, item: Any, threads: int | None) -> Outcome:
    """Run ``fn(item)`` in a worker, returning the outcome instead of raising, with the traceback as text.

    The exception object itself is not sent back: it may not unpickle in the caller, and the text is what a
    report needs. ``threads`` (Ray) sets the torch threads first; a pool's initializer has already done so.
    """
    if threads is not None:  # a Ray worker: no pool initializer ran
        from ondevice.quiet import silence_lightning

        _set_threads(threads)
        silence_lightning()
    try:
        return True, fn(item), ""
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}", traceback.format_exc()
    except SystemExit as exc:
        # Lightning turns a SIGTERM sent to the worker during a fit into SIGTERMException, a SystemExit. Left to
        # the pool, it would reach the study's own process and end it without a word; as the task's failure, the
        # study names the item and stops as for any failed task. (A dying study kills its workers with SIGKILL.)
        said = f" ({exc})" if str(exc) else ""
        message = f"{type(exc).__name__}: the worker was told to stop during this task{said}"
        return False, message, traceback.format_exc()


def _apply_inline(fn: Task, item: Any, threads: int) -> Outcome:
    """Run ``fn(item)`` in the calling process with ``threads`` torch threads, restoring the caller's count after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _apply(fn, item, None)
    finally:
        torch.set_num_threads(before)


# -- the common loop ------------------------------------------------------------------------------------------------


class Executor(ABC):
    """The interface and the submission loop; subclasses say how to submit, wait for, read and cancel a task."""

    kind = "abstract"

    def __init__(self, threads: int) -> None:
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        self.threads = threads
        self._closed = False

    @abstractmethod
    def _max_in_flight(self) -> int:
        """How many tasks may be submitted and not yet collected."""

    @abstractmethod
    def _submit(self, fn: Task, item: Any) -> Any:
        """Start ``fn(item)``; a handle for it."""

    @abstractmethod
    def _wait_any(self, handles: list[Any]) -> list[Any]:
        """Block until at least one of ``handles`` is done; the done ones."""

    @abstractmethod
    def _outcome(self, handle: Any) -> Outcome:
        """The outcome of a done task, a failure of its worker included (never raises)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """How the tasks run, for reports: kind, threads per task, ..., and the driver's ``machine``."""

    def _prepare(self, fn: Task) -> None:  # noqa: B027 - optional hook, nothing to check by default
        """Check ``fn`` before the first submission (e.g. that it pickles)."""

    def _cancel_queued(self, handles: list[Any]) -> list[Any]:
        """Cancel those of ``handles`` that have not started (after a failure); the cancelled ones."""
        return []

    def _abandon(self, handles: list[Any]) -> None:  # noqa: B027 - optional hook
        """The caller stopped iterating: cancel what can be cancelled of ``handles``."""

    def close(self) -> None:
        """Release the workers; the executor cannot run tasks afterwards."""
        self._closed = True

    def __enter__(self: _E) -> _E:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def map_unordered(self, fn: Task, items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """``(item, fn(item))`` for every item, in the order the tasks finish.

        Items are drawn from ``items`` lazily, keeping a bounded number of tasks in flight. When a task raises,
        no new task is submitted: those not started are cancelled, the running ones finish and are yielded, then
        :class:`TaskError` is raised for the first failure (later failures are logged). Leaving the loop early
        (``break``, an exception in its body) cancels the tasks not started.
        """
        if self._closed:
            raise RuntimeError(f"this {type(self).__name__} is closed")
        self._prepare(fn)
        source = iter(items)
        exhausted = False
        pending: dict[Any, Any] = {}
        failure: TaskError | None = None
        try:
            while True:
                while failure is None and not exhausted and len(pending) < self._max_in_flight():
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[self._submit(fn, item)] = item
                if not pending:
                    break
                for handle in self._wait_any(list(pending)):
                    item = pending.pop(handle)
                    ok, value, remote_tb = self._outcome(handle)
                    if ok:
                        yield item, value
                    elif failure is None:
                        failure = TaskError(item, value, remote_tb)
                        for cancelled in self._cancel_queued(list(pending)):
                            pending.pop(cancelled)
                        if pending:
                            log.warning("%s; waiting for the %d running task(s) to finish", failure, len(pending))
                    else:
                        log.warning("task %s also failed: %s\n%s", item_label(item), value, remote_tb)
        finally:
            if pending:
                self._abandon(list(pending))
        if failure is not None:
            raise failure from RemoteTraceback(failure.remote_traceback or failure.message)


# -- local ----------------------------------------------------------------------------------------------------------


class _Finished:
    """A task run in the calling process: already done when submitted."""

    __slots__ = ("outcome",)

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome


class LocalExecutor(Executor):
    """Tasks in a pool of ``workers`` spawned processes on this machine, each with ``threads`` torch threads.

    Args:
        workers: processes; default ``cpu_count // threads`` (at least 1). ``0`` runs every task in the calling
            process, one after the other, with the torch thread count set to ``threads`` for the task's duration.
        threads: torch intra-op threads per worker (``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` too).

    At most ``2 × workers`` tasks are in flight (running, or queued so a freed worker starts at once).
    """

    kind = "local"

    def __init__(self, workers: int | None = None, threads: int = 1) -> None:
        super().__init__(threads)
        if workers is None:
            workers = max(1, (os.cpu_count() or 1) // threads)
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
            raise ValueError(f"workers must be a non-negative integer (0: run in this process), got {workers!r}")
        self.workers = workers
        self._pool: cf.ProcessPoolExecutor | None = None
        if workers > 0:
            self._pool = cf.ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads,),
            )

    def _max_in_flight(self) -> int:
        return 2 * self.workers if self.workers else 1

    def _prepare(self, fn: Task) -> None:
        if self._pool is None:
            return
        try:
            pickle.dumps(fn)
        except Exception as exc:
            raise TypeError(
                f"{fn!r} cannot be sent to the worker processes ({type(exc).__name__}: {exc}); the task must be a "
                "top-level function of a module the workers can import"
            ) from exc

    def _submit(self, fn: Task, item: Any) -> Any:
        if self._pool is None:
            return _Finished(_apply_inline(fn, item, self.threads))
        return self._pool.submit(_apply, fn, item, None)

    def _wait_any(self, handles: list[Any]) -> list[Any]:
        if self._pool is None:
            return handles
        done, _ = cf.wait(handles, return_when=cf.FIRST_COMPLETED)
        return [h for h in handles if h in done]  # submission order among those done together

    def _outcome(self, handle: Any) -> Outcome:
        if isinstance(handle, _Finished):
            return handle.outcome
        try:
            return handle.result()
        except Exception as exc:  # the worker died (BrokenProcessPool), or the item or result did not pickle
            return False, f"{type(exc).__name__}: {exc}", "".join(traceback.format_exception(exc))

    def _cancel_queued(self, handles: list[Any]) -> list[Any]:
        return [h for h in handles if not isinstance(h, _Finished) and h.cancel()]

    def _abandon(self, handles: list[Any]) -> None:
        self._cancel_queued(handles)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "workers": self.workers,
            "threads": self.threads,
            "start_method": "spawn" if self.workers else "in-process",
            "machine": machine_info(),
        }

    def close(self) -> None:
        """Shut the pool down: tasks not started are cancelled, running ones are waited for."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        super().close()


# -- Ray ------------------------------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(RAY_MISSING) from exc
    return ray


class RayExecutor(Executor):
    """Tasks on Ray: each reserves ``threads`` CPUs and runs with that many torch threads.

    Args:
        address: a running cluster's address (``"auto"``, ``"ray://head:10001"``, ``"head:6379"``); default: start
            a local instance with ``num_cpus`` CPUs (default ``os.cpu_count()``).
        threads: CPUs reserved by, and torch threads of, every task.
        num_cpus: the local instance's CPUs; only without ``address``.
        max_in_flight: tasks submitted at a time; default the tasks the cluster can run at once
            (``CPU // threads``, read again at each refill so a growing cluster is used). An autoscaling cluster
            that starts with no worker CPUs needs a larger value to see the demand.

    If Ray is already initialised in this process, that instance is used as is (``address`` and ``num_cpus`` are
    ignored) and left running on :meth:`close`; otherwise the instance started here is shut down on close. Worker
    output is not forwarded to the driver (``log_to_driver=False``): a failure's traceback comes back in its
    :class:`TaskError`, and the workers' logs stay in Ray's session folder. On a cluster, every node needs this
    project installed (the task function is pickled by reference).

    After a failure, tasks already submitted are left to finish: Ray cannot cancel a queued task without risking
    interrupting a running one, which is why ``max_in_flight`` defaults to what can run at once. Ray's own retries
    apply: a task whose worker process or node dies is run again (3 times by default) before it counts as failed.
    """

    kind = "ray"

    def __init__(
        self,
        address: str | None = None,
        threads: int = 1,
        num_cpus: int | None = None,
        max_in_flight: int | None = None,
    ) -> None:
        super().__init__(threads)
        ray = _import_ray()
        if num_cpus is not None and address is not None:
            raise ValueError(f"num_cpus={num_cpus} sizes a local Ray instance; the cluster at {address!r} has its own")
        if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < threads):
            raise ValueError(f"num_cpus must be an integer of at least threads={threads}, got {num_cpus!r}")
        if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
            raise ValueError(f"max_in_flight must be a positive integer, got {max_in_flight!r}")
        self.address = address
        self.max_in_flight = max_in_flight
        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            if address is not None:
                ray.init(address=address, log_to_driver=False)
            else:
                # address="local": a new instance even if RAY_ADDRESS points at a cluster
                ray.init(
                    address="local",
                    num_cpus=num_cpus if num_cpus is not None else os.cpu_count(),
                    include_dashboard=False,
                    log_to_driver=False,
                )
        try:
            self._remote = ray.remote(num_cpus=threads)(_apply)
            largest = max((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")), default=0.0)
        except BaseException:
            if self._started:
                ray.shutdown()
            raise
        if largest < threads:
            log.warning(
                "no Ray node has %d CPUs (the largest has %g); tasks will wait until such a node joins",
                threads,
                largest,
            )

    def _cluster_cpus(self) -> float:
        return float(self._ray.cluster_resources().get("CPU", 0.0))

    def _max_in_flight(self) -> int:
        if self.max_in_flight is not None:
            return self.max_in_flight
        return max(1, int(self._cluster_cpus() // self.threads))

    def _submit(self, fn: Task, item: Any) -> Any:
        return self._remote.remote(fn, item, self.threads)

    def _wait_any(self, handles: list[Any]) -> list[Any]:
        ready, _ = self._ray.wait(handles, num_returns=1)
        return ready

    def _outcome(self, handle: Any) -> Outcome:
        try:
            return self._ray.get(handle)
        except self._ray.exceptions.RayError as exc:  # the worker or its node died, the task was cancelled, ...
            return False, f"{type(exc).__name__}: {exc}", str(exc)

    def _abandon(self, handles: list[Any]) -> None:
        for handle in handles:
            try:
                self._ray.cancel(handle)
            except Exception as exc:  # already finished, or its owner is gone: nothing left to cancel
                log.debug("could not cancel a Ray task: %s", exc)

    def describe(self) -> dict[str, Any]:
        ray = self._ray
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = self._cluster_cpus()
        return {
            "kind": self.kind,
            "address": self.address if self.address is not None else ("local" if self._started else "existing"),
            "threads": self.threads,
            "nodes": len(nodes),
            "cluster_cpus": cpus,
            "slots": int(cpus // self.threads),
            "max_in_flight": self._max_in_flight(),
            "ray": ray.__version__,
            "machine": machine_info(),
        }

    def close(self) -> None:
        """Shut Ray down if this executor started it."""
        if self._started and not self._closed and self._ray.is_initialized():
            self._ray.shutdown()
        super().close()


def make_executor(kind: str, workers: int | None = None, threads: int = 1, address: str | None = None) -> Executor:
    """The executor of ``rfml snr-study --executor KIND``.

    ``local``: :class:`LocalExecutor` (``workers`` processes, ``0`` = in this process; ``address`` must be unset).
    ``ray``: :class:`RayExecutor` on the cluster at ``address``, or a local instance of ``workers × threads`` CPUs
    (all the cores when ``workers`` is unset; ``workers`` cannot size a cluster).
    """
    if kind == "local":
        if address is not None:
            raise ValueError(f"address {address!r} is for the ray executor; the local executor runs on this machine")
        return LocalExecutor(workers=workers, threads=threads)
    if kind == "ray":
        if workers is not None:
            if address is not None:
                raise ValueError(
                    f"workers={workers} sizes a local Ray instance; the cluster at {address!r} has its own size"
                )
            if not isinstance(workers, int) or workers < 1:
                raise ValueError(f"workers must be a positive integer for the ray executor, got {workers!r}")
        num_cpus = None if workers is None else workers * threads
        return RayExecutor(address=address, threads=threads, num_cpus=num_cpus)
    raise ValueError(f"unknown executor kind {kind!r}; expected one of: {', '.join(EXECUTOR_KINDS)}")
