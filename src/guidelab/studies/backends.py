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

Nothing hangs and nothing outlives the run. :meth:`RayBackend.probe` connects to a cluster
address within ``connect_timeout`` seconds (first a TCP connection to its host:port, ``auto``
resolved as Ray resolves it; then ``ray.init`` in a helper thread, abandoned after the timeout)
and callers (:func:`~guidelab.studies.run.run_spec`, ``guidelab run``) run it before the
results folder is created or locked; :meth:`RayBackend.close` ends what it opened.
A local instance is tied to the driver: Ray starts its head processes with
``PR_SET_PDEATHSIG`` (they die with the driver), but the agents and workers the raylet starts
would outlive a driver killed by SIGKILL. So before ``ray.init`` the backend starts a watchdog
process (:data:`_WATCHDOG`, plain Python, in its own session) that holds the read end of a pipe
from the driver and keeps a list of the instance's processes (first the driver's children born
after it, then the node's processes and every descendant, with their start times); when the pipe
closes (the driver ended, however it ended) it kills every process on the list that is still the
same process, then exits. Ray's driver installs a C++ SIGTERM handler that prints a raw stack
dump; the backend puts the Python handler back after ``ray.init`` (the caller's if it had one),
so SIGTERM stops a Ray run like SIGINT.

A unit is a pure function of (resolved spec, unit key), its noise is row-keyed and it runs with
one PyTorch CPU thread (:data:`~guidelab.studies.runner.UNIT_CPU_THREADS`), so neither the
backend, nor the order in which units finish, nor the number of workers changes a bit of the
results (on the same kind of device and dtype). To use several cores, run several units at once:
``--backend ray`` (``--workers N`` CPUs for a local instance).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .runner import UNIT_CPU_THREADS, run_unit
from .spec import Spec, spec_to_dict
from .units import Unit, unit_id

__all__ = ["LocalBackend", "RayBackend", "BackendError", "get_backend", "BACKENDS",
           "DEFAULT_CONNECT_TIMEOUT"]


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


DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds to reach a Ray cluster (probe and ``ray.init``) before giving up."""


def _split_address(address: str) -> tuple[str, int] | None:
    """``host:port``, ``ray://host:port`` or ``[v6]:port`` -> (host, port); None otherwise."""
    rest = address.split("://", 1)[1] if "://" in address else address
    rest = rest.split("/", 1)[0]
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


class RayBackend:
    """Run each unit as a Ray task.

    Args:
        address: a Ray cluster address to connect to (``ray://host:10001``, ``host:6379`` or
            ``auto``); None starts a local instance for the run.
        num_cpus: CPUs of the local instance (default min(2, os.cpu_count())); ignored with
            ``address``.
        max_retries: how often Ray retries a unit whose worker died.
        connect_timeout: seconds to reach the cluster at ``address`` (:meth:`probe`, then
            ``ray.init``) before failing with one line.
    """

    name = "ray"
    reports_rows = False

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 max_retries: int = 2, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT):
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) \
                or not connect_timeout > 0:
            raise ValueError(f"connect_timeout: expected a positive number of seconds, got "
                             f"{connect_timeout!r}")
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.connect_timeout = float(connect_timeout)

    def probe(self) -> None:
        """Connect to the cluster at ``address`` now, within ``connect_timeout`` seconds, so
        that an unreachable cluster stops a run before anything is written; nothing to do for
        a local instance (started by :meth:`run`) or when Ray is already initialised here.

        A ``host:port`` (or ``ray://host:port``) address is first probed by opening a TCP
        connection to it; ``auto`` is resolved as ``ray.init`` resolves it (``RAY_ADDRESS``,
        the latest cluster started on this machine) and then probed; then ``ray.init`` runs in
        a helper thread, abandoned after the timeout (Ray retries an unreachable cluster for
        minutes). The connection is kept for :meth:`run`, which closes it; :meth:`close`
        closes it when no run follows.

        Raises:
            ValueError: ``backend: ...`` naming the address and what failed (one line).
        """
        if not self.address:
            return
        ray = _import_ray()
        if ray.is_initialized():
            return
        self._reachable()
        self._hold_sigterm()
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                ray.init(address=self.address, log_to_driver=False)
            except BaseException as error:  # handed to the calling thread
                box["error"] = error

        worker_logger = logging.getLogger("ray._private.worker")
        quiet = _DropMessage("SIGTERM handler is not set")  # the caller's handler is kept
        worker_logger.addFilter(quiet)
        try:
            thread = threading.Thread(target=target, name="ray-connect", daemon=True)
            thread.start()
            thread.join(self.connect_timeout)
        finally:
            worker_logger.removeFilter(quiet)
        if thread.is_alive():
            self._restore_sigterm()
            raise ValueError(f"backend: Ray did not connect to the cluster at {self.address} "
                             f"within {self.connect_timeout:g} s (--connect-timeout)")
        if "error" in box:
            self._restore_sigterm()
            raise ValueError(f"backend: Ray could not connect to the cluster at "
                             f"{self.address}: {_first_line(box['error'])}")
        self._owned = True
        self._put_back_sigterm()

    def _reachable(self) -> None:
        """A TCP connection to the address's host:port within the timeout (one line if not)."""
        target = _split_address(self.address)
        if target is None:
            try:
                from ray._private.services import canonicalize_bootstrap_address

                resolved = canonicalize_bootstrap_address(self.address)
            except Exception as error:  # Ray's own words: no cluster found, a bad address
                raise ValueError(f"backend: no Ray cluster at {self.address}: "
                                 f"{_first_line(error)}") from None
            target = _split_address(resolved) if resolved else None
            if target is None:
                return  # nothing to probe: the timeout of ray.init still applies
        host, port = target
        try:
            with socket.create_connection((host, port), timeout=self.connect_timeout):
                pass
        except TimeoutError:
            raise ValueError(f"backend: the Ray cluster at {self.address} did not answer "
                             f"within {self.connect_timeout:g} s (--connect-timeout)") from None
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ValueError(f"backend: cannot reach the Ray cluster at {self.address} "
                             f"({reason})") from None

    # SIGTERM: ray.init installs Python's sys.exit handler and a C++ one that prints a raw
    # stack dump; the caller's Python handler is put back after it (Python's signal.signal
    # replaces the C++ handler too), and restored when the instance is closed.

    _owned = False
    _watchdog: _Watchdog | None = None
    _sigterm: Any = None

    def _hold_sigterm(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._sigterm = (signal.getsignal(signal.SIGTERM),)

    def _put_back_sigterm(self) -> None:
        if self._sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        previous, current = self._sigterm[0], signal.getsignal(signal.SIGTERM)
        handler = previous if callable(previous) else current
        signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)

    def _restore_sigterm(self) -> None:
        if self._sigterm is None or threading.current_thread() is not threading.main_thread():
            return
        previous, self._sigterm = self._sigterm[0], None
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    def _start_local(self, ray) -> None:
        """A local instance for this run, its processes watched (module docstring)."""
        self._hold_sigterm()
        self._watchdog = _Watchdog.start()
        try:
            ray.init(num_cpus=self.num_cpus or min(2, os.cpu_count() or 1),
                     include_dashboard=False, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
            self._watchdog.stop()
            self._watchdog = None
            self._restore_sigterm()
            raise ValueError(f"backend: Ray could not start a local instance: "
                             f"{_first_line(error)}") from None
        self._owned = True
        self._watchdog.track(_node_pids(ray))
        self._put_back_sigterm()

    def close(self) -> None:
        """Shut down the Ray instance this backend started or connected to (if any), stop its
        watchdog and restore the SIGTERM handler; a no-op otherwise."""
        if not self._owned:
            return
        self._owned = False
        try:
            _import_ray().shutdown()
        finally:
            if self._watchdog is not None:
                self._watchdog.stop()
                self._watchdog = None
            self._restore_sigterm()

    def run(self, spec: Spec, units: Sequence[Unit], on_result: Callable, *,
            chunk_rows: int | None = None, on_rows: Callable | None = None,
            log: Callable | None = None) -> None:
        """Run ``units`` of ``spec`` as Ray tasks; ``on_result(UnitResult)`` as each arrives
        (``on_rows`` is not called: workers report whole units). An instance this backend
        started or connected to (:meth:`probe`) is shut down at the end."""
        try:
            if not units:
                return
            ray = _import_ray()
            if not ray.is_initialized():
                if self.address:
                    self.probe()
                else:
                    self._start_local(ray)
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
            self.close()


class _DropMessage(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def _node_pids(ray) -> list[int]:
    """The processes of the local Ray node this driver started (gcs, raylet, monitors)."""
    try:
        node = ray._private.worker._global_node
        return [info.process.pid for infos in node.all_processes.values() for info in infos
                if info.process is not None]
    except Exception:  # a private API: without it the watchdog keeps what it saw
        return []


_WATCHDOG = r"""# guidelab: watchdog of a local Ray instance (dies with its driver)
import os, select, signal, sys, time

driver = int(sys.argv[1])


def processes():
    # pid -> (ppid, start time) of every process, from /proc (else psutil)
    out = {}
    if os.path.isdir("/proc"):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != b"Z":
                out[int(name)] = (int(fields[1]), int(fields[19]))
        return out
    try:
        import psutil
    except ImportError:
        return out
    for p in psutil.process_iter(["ppid", "create_time", "status"]):
        if p.info["status"] != psutil.STATUS_ZOMBIE:
            out[p.pid] = (p.info["ppid"], p.info["create_time"])
    return out


me = os.getpid()
born = processes().get(me, (0, 0))[1]
tracked = {}  # pid -> (ppid, start time) when first seen
roots = None  # until the driver names the node's processes: its children born after us


def update():
    table = processes()
    for pid, (ppid, start) in table.items():
        if pid == me or pid in tracked:
            continue
        if roots is None and ppid == driver and start >= born:
            tracked[pid] = (ppid, start)
        elif roots is not None and pid in roots:
            tracked[pid] = (ppid, start)
    grew = True
    while grew:  # descendants of what is tracked
        grew = False
        for pid, (ppid, start) in table.items():
            if (pid != me and pid not in tracked and ppid in tracked
                    and tracked[ppid][1] == table.get(ppid, (0, None))[1]):
                tracked[pid] = (ppid, start)
                grew = True
    return table


def within_roots(pid):
    seen = set()
    while pid in tracked and pid not in seen:
        if pid in roots:
            return True
        seen.add(pid)
        pid = tracked[pid][0]
    return False


def kill():
    for _ in range(2):  # twice: what the dying processes started in between
        table = update()
        for pid, (ppid, start) in list(tracked.items()):
            if table.get(pid, (0, None))[1] == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        time.sleep(0.2)


signal.signal(signal.SIGINT, signal.SIG_IGN)
buffer = b""
while True:
    ready, _, _ = select.select([0], [], [], 0.25)
    if ready:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            words = line.split()
            if words[:1] == [b"roots"]:
                update()
                roots = {int(w) for w in words[1:]}
                tracked = {pid: v for pid, v in tracked.items() if within_roots(pid)}
    update()
kill()
"""
"""The watchdog's program (run with ``python -c``; plain Python, no guidelab import): it reads
its stdin, a pipe from the driver, and when the pipe closes kills every process it tracked
(see the module docstring)."""


class _Watchdog:
    """A watchdog process tied to this driver by a pipe (see the module docstring)."""

    def __init__(self, process: subprocess.Popen | None):
        self.process = process

    @classmethod
    def start(cls) -> _Watchdog:
        env = dict(os.environ)
        try:  # psutil where there is no /proc: Ray ships it in its thirdparty_files
            import ray

            extra = os.path.join(os.path.dirname(ray.__file__), "thirdparty_files")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (extra, env.get("PYTHONPATH")) if p)
        except ImportError:
            pass
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid())], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                close_fds=True, env=env)
        except OSError:
            process = None  # no watchdog: Ray's own fate sharing still stops its head
        return cls(process)

    def track(self, pids: Sequence[int]) -> None:
        """Tell the watchdog the node's processes (it then tracks them and their
        descendants only)."""
        if self.process is None or not pids:
            return
        try:
            self.process.stdin.write(("roots " + " ".join(map(str, pids)) + "\n").encode())
            self.process.stdin.flush()
        except OSError:
            pass

    def stop(self) -> None:
        """Close the pipe (the watchdog kills what is left of the instance, then exits)."""
        if self.process is None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.process = None


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
