"""Studies: every experiment a validated spec, run unit by unit into a resumable results store.

- :mod:`~guidelab.studies.spec`: TOML specs (:func:`load_spec`, :class:`Spec`,
  :class:`SpecError`), built-in ones shipped in ``studies/specs``;
- :mod:`~guidelab.studies.units`: the sweep's units (:func:`expand_units`, :class:`Unit`);
- :mod:`~guidelab.studies.parts`: what a unit samples and who judges it, built from the
  spec's [data], [model], [judge] and [guidance.classifier] sections;
  :mod:`~guidelab.studies.artifacts`: the model store of trained models and fitted judges;
- :mod:`~guidelab.studies.runner`: :func:`run_unit` (one unit, streamed in chunks of rows);
  :mod:`~guidelab.studies.run`: :func:`run_spec` (a study into a results folder, only the
  missing units); :mod:`~guidelab.studies.pooling`: rows pooled over classes;
- :mod:`~guidelab.studies.store`: the results folder (:class:`ResultStore`);
- :mod:`~guidelab.studies.backends`: local and Ray backends;
- :mod:`~guidelab.studies.measures`: the registry of metrics a spec can name;
- :mod:`~guidelab.studies.aliases`: command-line aliases of spec keys (``guidelab reproduce``).
"""

from .aliases import default_strengths, li_jiao_spec, reproduce_spec
from .backends import BackendError, LocalBackend, RayBackend, get_backend
from .measures import METRICS, Metric, register_metric
from .results import atomic_write_bytes, write_csv
from .run import RunResult, run_spec
from .runner import RESULT_COLUMNS, UnitResult, run_unit
from .spec import Spec, SpecError, load_spec, spec_to_toml, validate_spec
from .store import ResultStore, SpecMismatchError
from .units import Unit, expand_units, make_unit, unit_settings

__all__ = [
    "BackendError", "LocalBackend", "RayBackend", "get_backend",
    "default_strengths", "li_jiao_spec", "reproduce_spec",
    "METRICS", "Metric", "register_metric",
    "atomic_write_bytes", "write_csv",
    "RESULT_COLUMNS", "RunResult", "UnitResult", "run_spec", "run_unit",
    "Spec", "SpecError", "load_spec", "spec_to_toml", "validate_spec",
    "ResultStore", "SpecMismatchError",
    "Unit", "expand_units", "make_unit", "unit_settings",
]
