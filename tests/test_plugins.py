"""A user's package joins guidelab's registries through the `guidelab.plugins` entry-point group;
`guidelab spec list` shows what is available and where it came from."""

import sys
import textwrap

import pytest
from typer.testing import CliRunner

from guidelab.cli import app
from guidelab.distributions import CATALOG
from guidelab.studies import load_spec, plugins, run_spec
from guidelab.studies.measures import METRICS

pytestmark = pytest.mark.usefixtures("one_thread")

PLUGIN = '''
from guidelab.distributions import GaussianMixture, register_distribution
from guidelab.studies.plugins import register_judge, register_model

def two_bumps():
    return GaussianMixture(means=[[-1.0], [1.0]], covariances=[0.3, 0.3], weights=[0.5, 0.5],
                           labels=[0, 1])

class Judge:
    num_classes = 2
    def log_class_posterior(self, x, alpha=1.0, sigma=0.0):
        return two_bumps().log_class_posterior(x.double(), 1.0, 0.0)

def register():
    register_distribution("two_bumps", two_bumps)
    register_model("two_bumps_model", two_bumps)
    register_judge("two_bumps_judge", Judge)
'''


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A package `bumps_plugin` 0.1 on sys.path with its dist-info declaring the entry point."""
    (tmp_path / "bumps_plugin.py").write_text(PLUGIN)
    info = tmp_path / "bumps_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bumps-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[guidelab.plugins]\nbumps = bumps_plugin:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    monkeypatch.undo()  # the package leaves sys.path before the plugins are loaded again
    for registry, name in ((CATALOG, "two_bumps"), (plugins.MODELS, "two_bumps_model"),
                           (plugins.JUDGES, "two_bumps_judge")):
        registry.pop(name, None)
    sys.modules.pop("bumps_plugin", None)
    plugins.load_plugins(force=True)


def test_a_plugin_registers_parts_that_specs_name_and_spec_list_shows(installed_plugin,
                                                                      tmp_path):
    assert plugins.load_plugins(force=True) == []
    listing = CliRunner().invoke(app, ["spec", "list"])
    assert listing.exit_code == 0
    lines = listing.output.splitlines()
    assert any(line.split() == ["two_bumps", "bumps-plugin"] for line in lines)
    assert any(line.split() == ["two_bumps_judge", "bumps-plugin"] for line in lines)
    assert any(line.split() == ["ddpm_type", "guidelab"] for line in lines)
    spec_path = tmp_path / "bumps.toml"
    spec_path.write_text(textwrap.dedent("""
        name = "bumps"
        trials = 40
        [distribution]
        family = "builtin"
        name = "two_bumps"
        [judge]
        kind = "python"
        factory = "two_bumps_judge"
        [sampler]
        name = "ddim"
        schedule = "linear"
        steps = 10
        [sweep]
        w = [0.0, 1.0]
        """))
    spec = load_spec(spec_path)
    result = run_spec(spec, tmp_path / "out", progress=False)
    assert len(result.rows) == 4 and result.rows[0]["inv_prior"] == pytest.approx(2.0)
    user = load_spec(spec_path, ["model={kind = 'python', factory = 'two_bumps_model'}"])
    assert user.model.factory == "two_bumps_model"
    assert "class_probability" in METRICS


def test_a_broken_plugin_is_one_line_and_does_not_stop_the_rest(tmp_path, monkeypatch):
    (tmp_path / "broken_plugin.py").write_text("def register():\n    raise RuntimeError('no')\n")
    info = tmp_path / "broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[guidelab.plugins]\nbroken = broken_plugin:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        problems = plugins.load_plugins(force=True)
        assert problems == ["plugin broken (broken_plugin:register) failed: no"]
        assert load_spec("smoke").name == "smoke"
    finally:
        sys.modules.pop("broken_plugin", None)
        monkeypatch.undo()
        plugins.load_plugins(force=True)
