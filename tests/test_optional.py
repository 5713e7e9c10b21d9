"""guidelab._optional.require: a missing or broken optional package is a one-line ValueError."""

from __future__ import annotations

import sys

import pytest

from guidelab._optional import install_hint, require


def test_require_returns_the_module():
    import json.decoder

    assert require("json.decoder", "digits", "parsing") is json.decoder


def test_missing_module_names_the_feature_and_the_setup_command():
    with pytest.raises(ValueError) as caught:
        require("guidelab_no_such_module.sub", "digits", "fit_logistic_judge")
    message = str(caught.value)
    assert message == ("fit_logistic_judge needs guidelab_no_such_module: it is not installed; "
                       "install it with `bash scripts/setup.sh digits` (or pip install -e "
                       "'.[digits]' from the clone)")
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_module_blocked_in_sys_modules_counts_as_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ValueError, match=r"^the Ray backend needs ray: it is not installed; "
                                         r"install it with `bash scripts/setup\.sh ray`"):
        require("ray", "ray", "the Ray backend")


def test_broken_install_reports_its_error_on_one_line(tmp_path, monkeypatch):
    # A package that is there but fails to import: a dependency of its own is missing, or (as
    # torchvision built for another torch) its import raises RuntimeError.
    (tmp_path / "guidelab_broken_dep.py").write_text("import guidelab_absent_dependency\n")
    (tmp_path / "guidelab_broken_ops.py").write_text(
        "raise RuntimeError('operator torchvision::nms\\n does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match=r"^judge needs guidelab_broken_dep: it could not be "
                                         r"imported \(ModuleNotFoundError: No module named "
                                         r"'guidelab_absent_dependency'\)"):
        require("guidelab_broken_dep", "digits", "judge")
    with pytest.raises(ValueError) as caught:
        require("guidelab_broken_ops", "torchvision", "from_torchvision")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("from_torchvision needs guidelab_broken_ops: it could not be "
                              "imported (RuntimeError: operator torchvision::nms does not exist)")
    assert "`bash scripts/setup.sh torchvision`" in message
    assert "pip install -e '.[torchvision]'" not in message  # not a pyproject extra


def test_install_hint_and_bad_arguments():
    assert install_hint("diffusers") == ("install it with `bash scripts/setup.sh diffusers` (or "
                                         "pip install -e '.[diffusers]' from the clone)")
    for kwargs, name in [({"module": ""}, "module"), ({"extra": 3}, "extra"),
                         ({"what": " "}, "what")]:
        arguments = {"module": "json", "extra": "digits", "what": "x"} | kwargs
        with pytest.raises(ValueError, match=f"^{name}:"):
            require(**arguments)
