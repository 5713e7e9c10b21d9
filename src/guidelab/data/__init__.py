"""Where training and held-out data come from: labelled data sets, sources, splits.

A :class:`LabelledData` is x ``[N, *shape]`` (float32 or float64), labels ``[N]`` (int64 in
0..C-1), ``num_classes`` C, a ``name``, the per-sample ``shape`` and a content ``fingerprint``
(SHA-256 of x as float32 little-endian, the int64 labels, the shape and C; see
:mod:`guidelab.data.core`).

Sources (deterministic functions of their arguments, seeds included):

* :func:`digits`: scikit-learn's bundled 8x8 digits, x = v/8 - 1 in [-1, 1] by default;
* :func:`family_draws`: exact draws of an exact family of ``guidelab.distributions``;
* :func:`swiss_roll`: a 2-D Swiss roll labelled by segment of its parameter t;
* :func:`load_file`: ``.npz``, ``.pt``, ``.parquet`` or a folder of class folders of images.

:func:`split` divides a data set into named, disjoint, stratified parts with given fractions
(largest-remainder counts per class, a seeded permutation per class) and fingerprints the
split. ``DATA_SOURCES`` maps names to sources; :func:`register_data_source` adds one.
See docs/data.md.
"""

from .core import LabelledData, exact_weights, fingerprint, largest_remainder
from .files import load_file
from .registry import DATA_SOURCES, data_source, register_data_source
from .sources import digits, family_draws, swiss_roll
from .split import Split, split, split_fingerprint

__all__ = [
    "LabelledData",
    "fingerprint",
    "largest_remainder",
    "exact_weights",
    "digits",
    "family_draws",
    "swiss_roll",
    "load_file",
    "Split",
    "split",
    "split_fingerprint",
    "DATA_SOURCES",
    "register_data_source",
    "data_source",
]
