"""Experiments: studies as validated specs, run unit by unit into a resumable results store.

- :mod:`~guidelab.studies.spec`: TOML specs (:func:`load_spec`, :class:`Spec`,
  :class:`SpecError`), built-in ones shipped in ``studies/specs``;
- :mod:`~guidelab.studies.units`: the sweep's units (:func:`expand_units`, :class:`Unit`);
- :mod:`~guidelab.studies.runner`: :func:`run_unit` (one unit, streamed in chunks of rows)
  and :func:`run_spec` (a study into a results folder, only the missing units);
- :mod:`~guidelab.studies.store`: the results folder (:class:`ResultStore`);
- :mod:`~guidelab.studies.backends`: local and Ray backends;
- :mod:`~guidelab.studies.measures`: the registry of metrics a spec can name;
- :mod:`~guidelab.studies.li_jiao_gmm`: the built-in mixture of the Li & Jiao study.
"""

from .backends import BackendError, LocalBackend, RayBackend, get_backend
from .li_jiao_gmm import default_strengths, li_jiao_spec
from .measures import METRICS, Metric, register_metric
from .results import atomic_write_bytes, write_csv
from .run import RunResult, run_spec
from .runner import RESULT_COLUMNS, UnitResult, run_unit
from .spec import Spec, SpecError, load_spec, spec_to_toml, validate_spec
from .store import ResultStore, SpecMismatchError
from .units import Unit, expand_units, make_unit, unit_settings

__all__ = [
    "BackendError", "LocalBackend", "RayBackend", "get_backend",
    "default_strengths", "li_jiao_spec",
    "METRICS", "Metric", "register_metric",
    "atomic_write_bytes", "write_csv",
    "RESULT_COLUMNS", "RunResult", "UnitResult", "run_spec", "run_unit",
    "Spec", "SpecError", "load_spec", "spec_to_toml", "validate_spec",
    "ResultStore", "SpecMismatchError",
    "Unit", "expand_units", "make_unit", "unit_settings",
]
