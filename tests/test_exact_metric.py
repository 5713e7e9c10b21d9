"""The exact_grid metric: grid references as columns of a study's rows."""


import pytest

from guidelab.studies import load_spec, run_spec
from guidelab.studies.spec import SpecError

HEAVY_1D = """
name = "heavy-1d"
trials = 400
seed = 1
dtype = "float64"
metrics = ["class_probability", "exact_grid"]

[metric_options.exact_grid]
refine = true
w = [0.0, 2.0]

[distribution]
family = "gaussian_mixture"
means = [[-1.0], [1.0], [3.0]]
covariances = [0.25, 0.09, 0.09]
weights = [0.5, 0.25, 0.25]
labels = [0, 1, 1]

[sampler]
name = "ddpm_type"
schedule = "linear"
steps = 100

[sweep]
w = [0.0, 1.0, 2.0]
class = [0]

[reference]
enabled = true
steps = 20
"""


pytestmark = pytest.mark.usefixtures("one_thread")


def test_exact_grid_columns_in_a_study(tmp_path):
    spec_path = tmp_path / "heavy.toml"
    spec_path.write_text(HEAVY_1D)
    run_spec(spec_path, tmp_path / "out", progress=False)
    import csv

    rows = list(csv.DictReader(open(tmp_path / "out" / "results.csv")))
    by_key = {(r["sampler"], float(r["w"])): r for r in rows}
    reference = by_key[("exact_reverse", 0.0)]
    # the identity E[1/p(c|X)] = 1/p(c) = 2 for exact draws, reached by the grid with no
    # Monte Carlo error (the heavy tail makes the Monte Carlo mean useless here)
    grid_q, grid_err = float(reference["grid_q"]), float(reference["grid_q_err"])
    assert abs(grid_q - 2.0) < max(1e-3, 10 * grid_err) * 2.0
    # the DDPM-type sampler's own Q(0) carries its discretisation error (larger at T = 100)
    ddpm0 = float(by_key[("ddpm_type", 0.0)]["grid_q"])
    assert ddpm0 > 2.0 + 1e-2
    # guidance lowers Q (Li & Jiao), exactly on the grid
    assert float(by_key[("ddpm_type", 2.0)]["grid_q"]) < ddpm0
    # w = 1 is not in metric_options.exact_grid.w: no grid value, a blank cell (not NaN)
    assert by_key[("ddpm_type", 1.0)]["grid_q"] == ""
    # the KL of the exact kernel's output to p(x|c) is zero up to quadrature error
    assert abs(float(reference["kl"])) < 1e-4


def test_exact_grid_refuses_what_it_cannot_compute(tmp_path):
    spec_path = tmp_path / "bad.toml"
    three_d = HEAVY_1D.replace("[[-1.0], [1.0], [3.0]]",
                               "[[-1.0, 0, 0], [1.0, 0, 0], [3.0, 0, 0]]")
    spec_path.write_text(three_d)
    with pytest.raises(SpecError, match="dimension 1 or 2"):
        load_spec(spec_path)
    spec_path.write_text(HEAVY_1D.replace("refine = true", "refine = 3"))
    with pytest.raises(SpecError, match="metric_options.exact_grid"):
        load_spec(spec_path)
