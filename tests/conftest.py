"""Shared test fixtures."""

import os
import selectors
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one PyTorch CPU thread, then restore the count.

    Modules of small tensors and tiny networks use it (``pytestmark``): a second thread gains
    them nothing, and on a shared 2-core machine the idle-spinning OpenMP workers slowed them
    10-100x. Results are deterministic either way.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DIGITS_TINY = ["trials=12", "sweep.w=[0, 2]", "sweep.class=[0, 3]", "model.steps=30",
               "guidance.classifier.steps=20", "sampler.steps=12",
               "judge.inverse_regularisation=[1.0]", "judge.folds=2"]

SMALL = {
    "smoke": ["trials=40"],
    "li-jiao-gmm": ["trials=40", "sampler.steps=20", "reference.steps=10", "sweep.w=[0, 1]",
                    "metric_options.exact_grid.points=17",
                    "metric_options.exact_grid.refine=false",
                    "metric_options.exact_grid.w=[0.0, 1.0]", "metric_options.profile.steps=10",
                    "metric_options.profile.paths=16"],
    "li-jiao-1d": ["trials=40", "sampler.steps=30", "reference.steps=10", "sweep.w=[0, 2]",
                   "metric_options.exact_grid.points=65", "metric_options.profile.steps=10"],
    "li-jiao-digits": DIGITS_TINY,
    "learned-vs-exact": ["trials=20", "sampler.steps=10", "data.n_per_class=200",
                         "sweep.w=[0, 1]", "sweep.class=[0]",
                         'sweep.model=[{kind = "exact"}, {kind = "trained", architecture = '
                         '"mlp", hidden = 16, depth = 1, steps = 20, batch_size = 64}]',
                         "metric_options.score_error.points=64",
                         "metric_options.score_error.levels=3"],
    "support-leak": ["trials=20", "sampler.steps=10", "sweep.w=[0, 2]",
                     'sweep."model.eps"=[0.0, 0.1]'],
    "reward-gmm": ["trials=40", "sampler.steps=20", "sweep.w=[0, 2]"],
    "reward-swiss-roll": ["trials=40", "sampler.steps=20", "sweep.w=[0, 2]",
                          "metric_options.exact_grid={points = 17, refine = false, w = [0.0]}",
                          'sweep.model=[{kind = "exact"}, {kind = "trained", architecture = '
                          '"mlp", hidden = 16, depth = 1, steps = 20, batch_size = 64}]'],
}
"""Overrides that make each built-in study a few seconds long."""


def _run_watched(args: list[str], env: dict) -> tuple[int, str, str, float]:
    """Run ``python -m guidelab ARGS``; returns (exit status, stdout, stderr, the longest
    time without a byte on either stream, from the start to the exit)."""
    process = subprocess.Popen([sys.executable, "-m", "guidelab", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    selector = selectors.DefaultSelector()
    streams = {process.stdout: [], process.stderr: []}
    for stream in streams:
        os.set_blocking(stream.fileno(), False)
        selector.register(stream, selectors.EVENT_READ)
    started = last = time.monotonic()
    longest = 0.0
    open_streams = len(streams)
    while open_streams:
        for key, _ in selector.select(timeout=1.0):
            data = os.read(key.fileobj.fileno(), 65536)
            if not data:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            now = time.monotonic()
            longest, last = max(longest, now - last), now
            streams[key.fileobj].append(data)
        if time.monotonic() - started > 240:
            process.kill()
            break
    process.wait(timeout=60)
    longest = max(longest, time.monotonic() - last)
    text = {stream: b"".join(parts).decode() for stream, parts in streams.items()}
    return process.returncode, text[process.stdout], text[process.stderr], longest


@pytest.fixture(scope="session")
def built_in_runs(tmp_path_factory):
    """Every built-in study at its small size (:data:`SMALL`), run by `guidelab reproduce` in
    a subprocess with progress bars on, two at a time (one per core), sharing one model store:
    name -> (status, stdout, stderr, longest silence, results folder, model store). The CLI
    tests read their output, the report tests their report.html."""
    pytest.importorskip("sklearn")  # li-jiao-digits
    root = tmp_path_factory.mktemp("studies")
    cache = root / "cache"
    env = {**os.environ, "GUIDELAB_CACHE": str(cache), "OMP_NUM_THREADS": "1",
           "COLUMNS": "120"}

    def run(name):
        out = root / name
        args = ["reproduce", name, "--out", str(out),
                *[arg for item in SMALL[name] for arg in ("--set", item)]]
        return name, (*_run_watched(args, env), out, cache)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, sorted(SMALL)))
