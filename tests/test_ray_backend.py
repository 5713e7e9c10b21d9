"""The Ray backend against a local Ray instance: the same rows as the local backend."""

import pytest

ray = pytest.importorskip("ray")

from guidelab.studies import RayBackend, ResultStore, load_spec, run_spec  # noqa: E402

# run in one worker when the suite is split over processes (pytest -n): one Ray instance at a time
pytestmark = pytest.mark.xdist_group("ray")

SPEC = """
name = "ray-tiny"
trials = 48
seed = 5
keep_samples = 16

[distribution]
family = "gaussian_mixture"
means = [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]]
covariances = [[0.5, 0.3], [0.4, 0.4], [0.3, 0.6]]
weights = [0.4, 0.3, 0.3]
labels = [0, 1, 1]

[sampler]
name = "ddpm_type"
schedule = "linear"
steps = 6

[sweep]
w = [0, 1, 4]
"sampler.name" = ["ddpm_type", "ddim"]

[reference]
enabled = true
steps = 4
"""


def test_ray_backend_starts_its_own_instance_and_resumes_a_local_run(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    spec = load_spec(path)
    full = run_spec(spec, tmp_path / "full", progress=False)
    half = [u.id for u in full.units[::2]]
    run_spec(spec, tmp_path / "mixed", units=half, progress=False)
    assert not ray.is_initialized()
    mixed = run_spec(spec, tmp_path / "mixed", backend=RayBackend(num_cpus=2), progress=False)
    assert not ray.is_initialized()  # the instance it started is stopped
    assert sorted(mixed.skipped) == sorted(half)
    assert mixed.rows == full.rows


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


def test_ray_and_local_backends_give_identical_rows(local_ray, tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    spec = load_spec(path)
    local = run_spec(spec, tmp_path / "local", progress=False)
    remote = run_spec(spec, tmp_path / "ray", backend=RayBackend(), progress=False)
    assert len(local.rows) == 2 * 1 + 2 * 2 * 3  # references + classes x samplers x w
    assert sorted(remote.computed) == sorted(local.computed)
    assert remote.rows == local.rows  # every column, bit for bit (records included)
    samples = [ResultStore(tmp_path / name).read_samples().sort_by(
        [("unit_id", "ascending"), ("w", "ascending"), ("row", "ascending")]).to_pylist()
        for name in ("local", "ray")]
    assert samples[0] == samples[1]
    # Ray was already running: the backend used it and left it running
    assert ray.is_initialized()
    # a rerun on Ray computes nothing
    again = run_spec(spec, tmp_path / "ray", backend="ray", progress=False)
    assert again.computed == [] and again.rows == local.rows
