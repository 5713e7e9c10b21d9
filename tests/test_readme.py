"""The README's library example runs as written."""

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has a python example"
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    samples = namespace["samples"]
    assert samples.shape == (1000, 2) and torch.isfinite(samples).all()


def test_readme_names_the_two_setup_commands_and_ci_uses_the_test_one():
    text = README.read_text()
    test_command = "bash scripts/setup.sh test && .venv/bin/python -m pytest"
    assert "bash scripts/setup.sh && .venv/bin/guidelab reproduce li-jiao-gmm" in text
    assert test_command in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert test_command in ci
