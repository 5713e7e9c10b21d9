"""Optional dependencies: import one, or fail with one line that says how to install it.

guidelab's core needs only its required dependencies; a few features need an optional package
(scikit-learn for the digits data and judges, Ray for the Ray backend, diffusers for
``load_diffusers``, torchvision for torchvision judges). Each is an extra that
``bash scripts/setup.sh EXTRA`` installs into ``.venv``. :func:`require` imports such a package
where the feature needs it, so that importing guidelab never does, and turns a missing or broken
install into a ``ValueError`` whose message starts with the feature's name and names the setup
command (the command line prints it as one line).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["SETUP_ONLY_EXTRAS", "require", "install_hint"]

SETUP_ONLY_EXTRAS = frozenset({"torchvision"})
"""Extras that scripts/setup.sh installs but pyproject.toml does not declare: a torchvision
release is built for one torch release, so it is matched to the environment's torch there."""


def _check_name(value, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def install_hint(extra: str) -> str:
    """How to install an extra: the setup command, and the pip alternative where there is one.

    Args:
        extra: the extra's name, e.g. ``"digits"`` (an extra of pyproject.toml) or
            ``"torchvision"`` (one only ``scripts/setup.sh`` installs).

    Example:
        >>> print(install_hint("ray"))
        install it with `bash scripts/setup.sh ray` (or pip install -e '.[ray]' from the clone)
    """
    extra = _check_name(extra, "extra")
    if extra in SETUP_ONLY_EXTRAS:
        return (f"install it with `bash scripts/setup.sh {extra}` (it needs a torch build with "
                f"its matching {extra} release)")
    return (f"install it with `bash scripts/setup.sh {extra}` (or pip install -e '.[{extra}]' "
            f"from the clone)")


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` and return it; if that fails, raise a one-line ``ValueError``.

    The message is ``"{what} needs {package}: it is not installed; install it with `bash
    scripts/setup.sh {extra}` (...)"``, where package is the top-level package of ``module``;
    when the package is there but its import fails (a missing dependency of its own, a build that
    does not match the installed torch), "it is not installed" becomes "it could not be imported
    (the error)". The original exception is chained.

    Args:
        module: the dotted module to import, e.g. ``"sklearn.linear_model"``.
        extra: the extra that installs it, e.g. ``"digits"``.
        what: the feature that needs it, e.g. ``"fit_logistic_judge"``; it starts the message.

    Returns:
        The imported module.

    Raises:
        ValueError: if the import fails, or an argument is not a non-empty string.

    Example:
        >>> require("json", "digits", "a test").__name__
        'json'
    """
    module = _check_name(module, "module")
    extra = _check_name(extra, "extra")
    what = _check_name(what, "what")
    package = module.split(".")[0]
    try:
        return importlib.import_module(module)
    except Exception as error:  # a mismatched build raises RuntimeError, a broken one anything
        missing = (isinstance(error, ModuleNotFoundError)
                   and (error.name or "").split(".")[0] == package)
        if missing:
            state = "it is not installed"
        else:
            text = " ".join(str(error).split())[:300] or "no message"
            state = f"it could not be imported ({type(error).__name__}: {text})"
        raise ValueError(f"{what} needs {package}: {state}; {install_hint(extra)}") from error
