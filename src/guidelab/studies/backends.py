r"""Backends: where a study's units run. They differ only in that; results are the same bits.

A backend is any object with ``run(spec, units, on_result, *, chunk_rows, on_rows, log)`` and a
``reports_rows`` flag (whether it calls ``on_rows`` as samples finish).

* :class:`LocalBackend` (default): the units in this process, started in the fixed order of
  :func:`~guidelab.studies.units.expand_units`, a few at a time in threads (one CPU each).
* :class:`RayBackend`: each unit a Ray task (``pip install 'guidelab[ray]'``; Ray is imported
  only when this backend is used). With ``address`` it connects to an existing cluster (every
  worker needs guidelab installed); otherwise it starts a local Ray instance with a few CPUs and
  stops it afterwards. The driver writes each unit's file as soon as the unit's result arrives,
  so a worker that dies loses only its own unit (Ray retries it; a unit that still fails is
  reported and left for the next run).

A unit is a pure function of (resolved spec, unit key), its noise is row-keyed and it runs with
one PyTorch CPU thread (:data:`~guidelab.studies.runner.UNIT_CPU_THREADS`), so neither the
backend, nor the order in which units finish, nor the number of workers changes a bit of the
results (on the same kind of device and dtype). To use several cores, run several units at once:
``--backend ray`` (``--workers N`` CPUs for a local instance).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .runner import UNIT_CPU_THREADS, run_unit
from .spec import Spec, spec_to_dict
from .units import Unit, unit_id

__all__ = ["LocalBackend", "RayBackend", "BackendError", "get_backend", "BACKENDS"]


class BackendError(RuntimeError):
    """Units that failed on a backend for good (the finished ones are saved)."""


class _Cancelled(Exception):
    """Raised inside a worker thread's unit to stop it (the run was interrupted)."""


class LocalBackend:
    """Run units in this process: ``workers`` at a time, each in its own thread.

    Units are started in the fixed order of their list; each runs with one PyTorch CPU thread
    (PyTorch releases the GIL inside its kernels, so ``workers`` units use that many cores) and
    its result is handed to ``on_result`` in the calling thread as it finishes. With one worker
    the units run one after the other in the calling thread. An interruption (or an error in
    ``on_result``) stops the units in flight at their next strength; they leave no file.

    Args:
        workers: units at a time (default min(4, CPU count)).
    """

    name = "local"
    reports_rows = True

    def __init__(self, workers: int | None = None):
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ValueError(f"workers: expected a positive integer, got {workers!r}")
        self.workers = workers or min(4, os.cpu_count() or 1)

    def run(self, spec: Spec, units: Sequence[Unit], on_result: Callable, *,
            chunk_rows: int | None = None, on_rows: Callable | None = None,
            log: Callable | None = None) -> None:
        """Run ``units`` of ``spec``; ``on_result(UnitResult)`` after each, ``on_rows(n)`` as
        samples finish."""
        import torch

        if self.workers == 1 or len(units) <= 1:
            for unit in units:
                on_result(run_unit(spec, unit, chunk_rows=chunk_rows, on_rows=on_rows, log=log))
            return
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        stop = threading.Event()
        lock = threading.Lock()

        def progress(n: int) -> None:
            if stop.is_set():
                raise _Cancelled
            if on_rows is not None:
                with lock:
                    on_rows(n)

        # the thread count is process-wide: pin it for the whole run, not unit by unit
        old_threads = torch.get_num_threads()
        torch.set_num_threads(UNIT_CPU_THREADS)
        executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="unit")
        try:
            queue = list(units)
            running = set()
            while queue or running:
                while queue and len(running) < self.workers:
                    running.add(executor.submit(run_unit, spec, queue.pop(0),
                                                chunk_rows=chunk_rows, on_rows=progress,
                                                log=log))
                done, running = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: id(f)):
                    on_result(future.result())
        finally:
            stop.set()
            executor.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(old_threads)


def _remote_unit(spec_data: dict, key: tuple, chunk_rows: int | None):
    """The body of a Ray task: one unit from plain data (the resolved spec and the unit key)."""
    spec = Spec.model_validate(spec_data)
    return run_unit(spec, Unit(tuple(key), unit_id(tuple(key))), chunk_rows=chunk_rows)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ValueError("backend: the ray backend needs Ray; install it with "
                         "pip install 'guidelab[ray]'") from None
    return ray


class RayBackend:
    """Run each unit as a Ray task.

    Args:
        address: a Ray cluster address to connect to (``ray://host:10001``, ``host:6379`` or
            ``auto``); None starts a local instance for the run.
        num_cpus: CPUs of the local instance (default min(2, os.cpu_count())); ignored with
            ``address``.
        max_retries: how often Ray retries a unit whose worker died.
    """

    name = "ray"
    reports_rows = False

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 max_retries: int = 2):
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries

    def run(self, spec: Spec, units: Sequence[Unit], on_result: Callable, *,
            chunk_rows: int | None = None, on_rows: Callable | None = None,
            log: Callable | None = None) -> None:
        """Run ``units`` of ``spec`` as Ray tasks; ``on_result(UnitResult)`` as each arrives
        (``on_rows`` is not called: workers report whole units)."""
        if not units:
            return
        ray = _import_ray()
        started = False
        if not ray.is_initialized():
            try:
                if self.address:
                    ray.init(address=self.address, log_to_driver=False)
                else:
                    ray.init(num_cpus=self.num_cpus or min(2, os.cpu_count() or 1),
                             include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = f"the cluster at {self.address}" if self.address else "a local instance"
                raise ValueError(f"backend: Ray could not start or connect to {where}: "
                                 f"{error}") from None
            started = True
        try:
            task = ray.remote(num_cpus=1, max_retries=self.max_retries)(_remote_unit)
            spec_data = spec_to_dict(spec)
            pending: dict[Any, Unit] = {}
            for unit in units:
                pending[task.remote(spec_data, unit.key, chunk_rows)] = unit
            failures: list[tuple[Unit, BaseException]] = []
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    unit = pending.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as error:  # a task that failed for good
                        failures.append((unit, error))
                        if log is not None:
                            log(f"unit {unit.id} failed on Ray: {_first_line(error)}")
                        continue
                    on_result(result)
            if failures:
                unit, error = failures[0]
                raise BackendError(f"backend: {len(failures)} unit(s) failed on Ray (first: "
                                   f"{unit.id}: {_first_line(error)}); the finished units are "
                                   f"saved, run again to compute the rest")
        finally:
            if started:
                ray.shutdown()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__


BACKENDS = {"local": LocalBackend, "ray": RayBackend}
"""name -> backend class."""


def get_backend(backend: Any, **options) -> Any:
    """A backend object from a name (``"local"``, ``"ray"``) or a backend object."""
    if isinstance(backend, str):
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; expected one of "
                             f"{', '.join(BACKENDS)}")
        return BACKENDS[backend](**options)
    if not callable(getattr(backend, "run", None)):
        raise ValueError(f"backend: expected 'local', 'ray' or an object with run(), got "
                         f"{type(backend).__name__}")
    return backend
