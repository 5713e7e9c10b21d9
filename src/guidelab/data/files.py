r"""Labelled data from files: ``.npz``, ``.pt``, ``.parquet`` or a folder of class folders.

Formats (``x_key`` and ``label_key`` default to ``"x"`` and ``"labels"``):

* ``.npz`` (``numpy.load`` with ``allow_pickle=False``): arrays ``x_key`` ``[N, *shape]`` and
  ``label_key`` ``[N]``.
* ``.pt`` (``torch.load`` with ``weights_only=True``, on the CPU): a dict with tensors
  ``x_key`` and ``label_key``.
* ``.parquet`` (pyarrow): a column ``label_key`` and either one list column ``x_key`` (lists
  of equal length, possibly nested, giving ``shape``) or numeric columns ``<x_key>0``,
  ``<x_key>1``, ... ``<x_key>{d-1}`` (shape ``(d,)``).
* a folder ``root/<class name>/<file>`` of ``.png`` or ``.npy`` files: the class folders are
  sorted by name and class k is the k-th (``class_names`` keeps the folder names); within a
  class the files are read in order of name. A ``.npy`` array is one sample as stored; a PNG
  is decoded with Pillow (needed only then) into ``[channels, height, width]`` pixel values as
  stored (0..255 for 8-bit images; palette images become RGB or RGBA). Every sample must have
  the same shape. Hidden entries (names starting with ``.``) and files directly in ``root``
  are ignored.

Checks, each failure a ``ValueError`` starting ``path: <path>:`` and saying what was expected:
the file exists and has a known format, the keys or columns exist, x is numeric and finite
(no NaN or infinity), labels are integers (integer dtype, or whole-valued floats) >= 0, one
label per row, at least one row, and no empty class folder.

x keeps float64 if stored so and is float32 otherwise (integers, float16, float32), unless
``dtype`` says otherwise; a 1-D x of N numbers becomes ``[N, 1]``. ``num_classes`` defaults
to the largest label + 1 (the number of class folders for a folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from .core import LabelledData

__all__ = ["load_file", "FILE_SUFFIXES", "IMAGE_SUFFIXES"]

FILE_SUFFIXES = (".npz", ".pt", ".parquet")
IMAGE_SUFFIXES = (".png", ".npy")


def _fail(path, message: str) -> ValueError:
    return ValueError(f"path: {path}: {message}")


def _tensor_to_numpy(value, path, key: str) -> np.ndarray:
    if not isinstance(value, torch.Tensor):
        raise _fail(path, f"expected {key!r} to be a tensor, got {type(value).__name__}")
    value = value.detach().cpu()
    if value.dtype in (torch.float16, torch.bfloat16):
        value = value.to(torch.float32)
    if value.is_complex():
        raise _fail(path, f"expected {key!r} to hold real numbers, got dtype {value.dtype}")
    return value.numpy()


def _read_npz(path: Path, x_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            for key in (x_key, label_key):
                if key not in keys:
                    raise _fail(path, f"missing key {key!r} (expected arrays {x_key!r} and "
                                      f"{label_key!r}; found {keys})")
            return archive[x_key], archive[label_key]
    except ValueError as error:
        if str(error).startswith("path: "):
            raise
        raise _fail(path, f"could not be read as a .npz archive of numeric arrays "
                          f"({error})") from None
    except (OSError, EOFError) as error:
        raise _fail(path, f"could not be read as a .npz archive ({error})") from None


def _read_pt(path: Path, x_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors of every kind
        raise _fail(path, f"could not be read as a weights-only torch file of tensors "
                          f"({type(error).__name__}: {str(error).splitlines()[0][:200]})"
                    ) from None
    if not isinstance(content, dict):
        raise _fail(path, f"expected a dict of tensors, got {type(content).__name__}")
    for key in (x_key, label_key):
        if key not in content:
            raise _fail(path, f"missing key {key!r} (expected tensors {x_key!r} and "
                              f"{label_key!r}; found {sorted(map(str, content))})")
    return (_tensor_to_numpy(content[x_key], path, x_key),
            _tensor_to_numpy(content[label_key], path, label_key))


def _arrow_numbers(array, path, what: str) -> np.ndarray:
    import pyarrow as pa

    kind = array.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise _fail(path, f"expected numbers in {what}, got type {kind}")
    if array.null_count:
        raise _fail(path, f"expected no missing values in {what}, found {array.null_count}")
    return np.asarray(array.to_numpy(zero_copy_only=False))


def _read_parquet(path: Path, x_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise _fail(path, f"could not be read as a Parquet file ({error})") from None
    columns = table.column_names
    if label_key not in columns:
        raise _fail(path, f"missing label column {label_key!r} (found columns {columns})")
    labels = _arrow_numbers(table.column(label_key).combine_chunks(), path,
                            f"column {label_key!r}")
    n = table.num_rows
    if x_key in columns:
        column = table.column(x_key).combine_chunks()
        dims = []
        while pa.types.is_list(column.type) or pa.types.is_large_list(column.type) \
                or pa.types.is_fixed_size_list(column.type):
            if column.null_count:
                raise _fail(path, f"expected no missing lists in column {x_key!r}")
            lengths = np.asarray(pc.list_value_length(column).to_numpy(zero_copy_only=False))
            if lengths.size and (lengths != lengths[0]).any():
                raise _fail(path, f"expected lists of one length in column {x_key!r}, found "
                                  f"lengths from {lengths.min()} to {lengths.max()}")
            dims.append(int(lengths[0]) if lengths.size else 0)
            column = column.flatten()
        values = _arrow_numbers(column, path, f"column {x_key!r}")
        x = values.reshape(n, *dims)
    else:
        pattern = re.compile(re.escape(x_key) + r"(\d+)")
        found = {int(m.group(1)): name for name in columns if (m := pattern.fullmatch(name))}
        if not found or sorted(found) != list(range(len(found))):
            raise _fail(path, f"expected a list column {x_key!r} or numeric columns "
                              f"{x_key}0, {x_key}1, ... (numbered from 0 without gaps); "
                              f"found columns {columns}")
        x = np.stack([_arrow_numbers(table.column(found[i]).combine_chunks(), path,
                                     f"column {found[i]!r}").astype(np.float64)
                      for i in range(len(found))], axis=1)  # [N, d]
    return x, labels


def _read_png(file: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise _fail(file, "decoding PNG needs Pillow, which is not installed (install Pillow, "
                          "or store the samples as .npy files)") from None
    try:
        with Image.open(file) as image:
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
                image = image.convert("L" if image.mode == "1" else "RGB")
            array = np.asarray(image)
    except OSError as error:
        raise _fail(file, f"could not be decoded as a PNG image ({error})") from None
    if array.ndim == 2:
        return array[None]  # [1, H, W]
    return np.ascontiguousarray(array.transpose(2, 0, 1))  # [H, W, C] -> [C, H, W]


def _read_folder(root: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    classes = sorted(entry.name for entry in root.iterdir()
                     if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise _fail(root, "empty folder: expected class subfolders (root/<class name>/) "
                          "holding .png or .npy files, found none")
    samples, labels, shape = [], [], None
    for k, class_name in enumerate(classes):
        folder = root / class_name
        files = sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")),
                       key=lambda entry: entry.name)
        if not files:
            raise _fail(folder, "empty folder: expected .png or .npy files of class "
                                f"{class_name!r}")
        for file in files:
            suffix = file.suffix.lower()
            if file.is_dir() or suffix not in IMAGE_SUFFIXES:
                raise _fail(file, "expected a .png or .npy file in a class folder")
            if suffix == ".npy":
                try:
                    array = np.load(file, allow_pickle=False)
                except (ValueError, OSError, EOFError) as error:
                    raise _fail(file, f"could not be read as a numeric .npy array ({error})"
                                ) from None
            else:
                array = _read_png(file)
            if array.dtype.kind not in "biuf":
                raise _fail(file, f"expected numbers, got dtype {array.dtype}")
            if shape is None:
                shape = array.shape
            elif array.shape != shape:
                raise _fail(file, f"expected a sample of shape {shape} like the first one, "
                                  f"got {array.shape}")
            samples.append(array)
            labels.append(k)
    return np.stack(samples), np.asarray(labels, dtype=np.int64), tuple(classes)


def _check_labels(labels: np.ndarray, n: int, path, label_key: str) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise _fail(path, f"mismatched lengths: x has {n} rows but {label_key!r} has shape "
                          f"{labels.shape} (expected [{n}], one label per row)")
    if labels.dtype.kind == "f":
        if not np.isfinite(labels).all() or (labels != np.round(labels)).any():
            raise _fail(path, f"non-integer labels: expected integer classes in "
                              f"{label_key!r}, found values such as "
                              f"{labels[~np.isfinite(labels) | (labels != np.round(labels))][0]}")
    elif labels.dtype.kind not in "iu":
        raise _fail(path, f"non-integer labels: expected integer classes in {label_key!r}, got "
                          f"dtype {labels.dtype}")
    if n and labels.min() < 0:
        raise _fail(path, f"expected class labels >= 0 in {label_key!r}, found {labels.min()}")
    return labels.astype(np.int64)


def load_file(path, *, x_key: str = "x", label_key: str = "labels",
              num_classes: int | None = None, dtype: torch.dtype | None = None,
              name: str | None = None) -> LabelledData:
    """Labelled data from a ``.npz``, ``.pt`` or ``.parquet`` file or a class-folder tree.

    Args:
        path: the file, or the root folder of ``root/<class name>/*.png|*.npy``.
        x_key, label_key: the arrays' keys (``.npz``, ``.pt``) or columns (``.parquet``).
        num_classes: C (default: largest label + 1, or the number of class folders).
        dtype: torch.float32 or torch.float64 (default: float64 if stored so, else float32).
        name: the data set's name (default: the file's stem or the folder's name).

    Returns:
        ``LabelledData`` with x ``[N, *shape]`` and labels ``[N]`` (and ``class_names`` for a
        folder). Formats and checks are in the module docstring.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path: expected a file or folder path, got {type(path).__name__}")
    path = Path(path)
    if dtype is not None and dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected torch.float32, torch.float64 or None, got {dtype!r}")
    if not path.exists():
        raise _fail(path, "no such file or folder")
    class_names = None
    if path.is_dir():
        x, labels, class_names = _read_folder(path)
        if num_classes is not None and num_classes != len(class_names):
            raise ValueError(f"num_classes: expected {len(class_names)} (the class folders of "
                             f"{path}), got {num_classes!r}")
        label_key = "class folders"
    else:
        suffix = path.suffix.lower()
        readers = {".npz": _read_npz, ".pt": _read_pt, ".parquet": _read_parquet}
        if suffix not in readers:
            raise _fail(path, f"unknown extension {suffix!r}: expected a "
                              f"{', '.join(FILE_SUFFIXES)} file or a folder of class folders")
        x, labels = readers[suffix](path, x_key, label_key)
    x = np.asarray(x)
    labels = np.asarray(labels)
    if x.dtype.kind not in "biuf" or x.ndim < 1:
        raise _fail(path, f"expected numbers [N, *shape] in {x_key!r}, got dtype {x.dtype} and "
                          f"shape {x.shape}")
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    labels = _check_labels(labels, n, path, label_key)
    if n == 0:
        raise _fail(path, "expected at least one row, found none")
    finite = np.isfinite(x.reshape(n, -1)).all(axis=1) if x.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        raise _fail(path, f"NaN or infinite values in {x_key!r}: {int((~finite).sum())} rows, "
                          f"the first row {int(np.flatnonzero(~finite)[0])}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes <= int(labels.max()):
        raise ValueError(f"num_classes: expected an integer > the largest label "
                         f"{int(labels.max())} of {path}, got {num_classes!r}")
    if dtype is None:
        dtype = torch.float64 if x.dtype == np.float64 else torch.float32
    tensor = torch.from_numpy(np.array(x, dtype=np.float64 if dtype == torch.float64
                                       else np.float32, order="C", copy=True))
    return LabelledData(tensor, torch.from_numpy(labels), int(num_classes),
                        name if name is not None else (path.stem or path.name),
                        class_names=class_names)
