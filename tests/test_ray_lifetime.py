"""A run that cannot hang or outlive its driver: an unreachable Ray cluster fails within the
connect timeout before the results folder exists; SIGKILL of a driver that started a local Ray
instance leaves no process of that instance alive; SIGTERM stops a run like Ctrl-C (exit 143,
the finished units kept, the resume hint), on Ray without Ray's raw signal dump.

Every test runs the real command in a child process and signals it from outside. The Ray tests
(a local instance takes about 10 s to start) are few and skipped where Ray is missing.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from guidelab.studies import ResultStore

# run in one worker when the suite is split over processes (pytest -n): one Ray instance at a time
pytestmark = pytest.mark.xdist_group("ray")

COMMAND = [sys.executable, "-c", "from guidelab.cli import app; app()"]


def finished_units(out) -> set[str]:
    units = out / "units"
    if not units.exists():
        return set()
    return {p.name for p in units.iterdir() if p.suffix == ".parquet"
            and not p.name.startswith(".")}


def start(args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*COMMAND, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kwargs)


# ----------------------------------------------------------------------------- local

def test_sigterm_stops_a_local_run_keeping_its_finished_units(tmp_path):
    out = tmp_path / "out"
    process = start(["run", "smoke", "--out", out, "--quiet", "--no-report", "--workers", "1",
                     "--set", "trials=40000"])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and not finished_units(out):
        time.sleep(0.05)
    running = process.poll() is None
    before = finished_units(out)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert running and before, err[-2000:]
    assert process.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == (
        f"terminated; finished units are saved in {out}, run the same command to resume")
    after = finished_units(out)
    assert before <= after  # nothing finished is lost
    assert len(ResultStore(out).finished()) == len(after) < 6  # and the run did stop early


# ----------------------------------------------------------------------------- ray

def _ray():
    return pytest.importorskip("ray")


def test_an_unreachable_ray_address_fails_within_the_timeout_and_writes_nothing(tmp_path):
    _ray()
    out = tmp_path / "out"
    process = start(["run", "smoke", "--out", out, "--quiet", "--backend", "ray",
                     "--address", "127.0.0.1:1", "--connect-timeout", "3"])
    _, err = process.communicate(timeout=120)  # start-up of the interpreter + at most 3 s
    assert process.returncode == 2, err[-2000:]
    assert err.splitlines() == ["error: backend: cannot reach the Ray cluster at 127.0.0.1:1 "
                                "(Connection refused)"]
    assert not out.exists()


def _descendants(psutil, pid: int) -> dict[int, tuple[str, float]]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    out = {}
    for child in children:
        try:
            out[child.pid] = (" ".join(child.cmdline())[:80], child.create_time())
        except psutil.Error:
            pass
    return out


def _alive(psutil, processes: dict[int, tuple[str, float]]) -> list[str]:
    """The recorded processes that still run (the same process: its start time; zombies,
    which only wait to be reaped, are dead)."""
    alive = []
    for pid, (name, created) in processes.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {name}")
        except psutil.NoSuchProcess:
            pass
    return alive


def _ray_run_in_flight(tmp_path, psutil):
    """A driver running smoke on a local Ray instance, once a unit is in flight; returns the
    process and every process of the run seen so far."""
    out = tmp_path / "out"
    process = start(["run", "smoke", "--out", out, "--quiet", "--no-report", "--backend",
                     "ray", "--workers", "1", "--set", "trials=400000"])
    seen: dict[int, tuple[str, float]] = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        seen.update(_descendants(psutil, process.pid))
        if any("ray::_remote_unit" in name for name, _ in seen.values()):
            break
        time.sleep(0.2)
    time.sleep(1.0)  # and the agents the raylet starts
    seen.update(_descendants(psutil, process.pid))
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert any("raylet" in name for name, _ in seen.values()), seen
    return process, seen, out


def _reap(psutil, seen):
    for pid, (_, created) in seen.items():  # leave nothing behind if the test failed
        try:
            survivor = psutil.Process(pid)
            if survivor.create_time() == created:
                survivor.kill()
        except psutil.Error:
            pass


def test_sigkill_of_the_driver_leaves_no_process_of_its_ray_instance(tmp_path):
    _ray()
    psutil = pytest.importorskip("psutil")  # shipped with Ray
    process, seen, _ = _ray_run_in_flight(tmp_path, psutil)
    try:
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(psutil, seen):
            time.sleep(0.25)
        assert _alive(psutil, seen) == []
    finally:
        _reap(psutil, seen)


def test_sigterm_stops_a_ray_run_without_a_raw_dump_and_stops_its_instance(tmp_path):
    _ray()
    psutil = pytest.importorskip("psutil")
    process, seen, out = _ray_run_in_flight(tmp_path, psutil)
    try:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
        assert process.returncode == 143, err[-2000:]
        assert "SIGTERM received" not in err and "PC: @" not in err
        assert err.strip().splitlines()[-1] == (
            f"terminated; finished units are saved in {out}, run the same command to resume")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(psutil, seen):
            time.sleep(0.25)
        assert _alive(psutil, seen) == []
    finally:
        _reap(psutil, seen)
