"""Users' labeled data files: CSV, Parquet and NPZ, read into one :class:`Table`.

- **CSV** (``.csv``, ``.tsv``): a header row; the label column and the feature columns by name.
- **Parquet** (``.parquet``, ``.pq``; needs ``pyarrow``): the same, by column name.
- **NPZ** (``.npz``, loaded with ``allow_pickle=False``): a feature array ``X`` of shape
  ``(n, d)`` or ``(n, *shape)`` (a shaped ``X`` sets the input shape), the label array named
  by the label column, optional ``feature_names``, and id/timestamp arrays by name.

Feature names come from the columns, class names from the label values as strings (sorted
numerically when they are all numbers). For a regression task (``task="regression"``) the
label column holds numbers instead, the targets, and there are no classes. An empty cell or
a null is a missing value (NaN); training refuses them, replaying sends them as ``null``.
Every problem is one :class:`~streamapp.errors.DataError` line.
"""

from __future__ import annotations

import csv
import logging
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from streamapp.errors import DataError

__all__ = ["Table", "Task", "class_names", "load_table"]

logger = logging.getLogger(__name__)

_CSV = (".csv", ".tsv", ".txt")
_PARQUET = (".parquet", ".pq")

Task = Literal["classification", "regression"]


@dataclass(frozen=True)
class Table:
    """A labeled data file: features ``X`` (n, d) float64 (NaN where missing) and ``y``: class
    indices (int64) for a classification task, the numeric targets (float64, no classes) for a
    regression task."""

    X: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    classes: list[str]
    input_shape: list[int] | None = None
    ids: list[str] | None = None
    ts: np.ndarray | None = None
    # the file named its features (CSV/Parquet columns, an NPZ's feature_names): a replay
    # sends them by name, so a column order other than the model's cannot go unnoticed
    named: bool = False
    task: Task = "classification"

    def __len__(self) -> int:
        return len(self.y)

    def require_complete(self) -> None:
        """Refuse missing values (training needs every value)."""
        missing = np.isnan(self.X).sum(axis=0)
        if missing.any():
            worst = int(np.argmax(missing))
            raise DataError(
                f"{int(missing.sum())} missing feature values (e.g. {int(missing[worst])} in "
                f"{self.feature_names[worst]!r}); fill or drop them before training"
            )

    def require_classes(self, minimum: int = 2) -> None:
        if self.task == "regression":
            raise DataError("the data has numeric targets; train a classifier on class labels")
        if len(self.classes) < minimum:
            raise DataError(
                f"the label column holds {len(self.classes)} class(es) {self.classes}; "
                f"a classifier needs at least {minimum}"
            )


def load_table(
    path: Path | str,
    label_column: str,
    feature_columns: Sequence[str] | None = None,
    *,
    id_column: str | None = None,
    ts_column: str | None = None,
    classes: Sequence[str] | None = None,
    task: Task = "classification",
) -> Table:
    """Read ``path``; features are ``feature_columns`` (default: every column that is not the
    label, id or timestamp). ``classes`` fixes the class list (e.g. a bundle's); with
    ``task="regression"`` the labels are numbers (a value that is not is one line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no such file: {path}")
    if task == "regression" and classes is not None:
        raise ValueError("a regression table has no classes")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _load_npz(path, label_column, feature_columns, id_column, ts_column, classes, task)
    if suffix in _CSV:
        columns = _read_csv(path)
    elif suffix in _PARQUET:
        columns = _read_parquet(path)
    else:
        raise DataError(f"{path}: unknown data format {suffix!r}; use .csv, .parquet or .npz")
    return _from_columns(
        path, columns, label_column, feature_columns, id_column, ts_column, classes, task
    )


# -- readers: every column as a list of Python values (str, number or None) ------------------


def _read_csv(path: Path) -> dict[str, list[Any]]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first name
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: empty file (expected a header row)")
            header = [name.strip() for name in header]
            if len(set(header)) != len(header):
                raise DataError(f"{path}: duplicate column names in the header")
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a CSV file: {exc}") from None
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(
                f"{path}: line {number} has {len(row)} fields, the header {len(header)}"
            )
    return {name: [row[j] for row in rows] for j, name in enumerate(header)}


def _read_parquet(path: Path) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("Parquet files need pyarrow: pip install streamapp[parquet]") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... for a bad file
        raise DataError(f"{path}: not a Parquet file: {_one_line(exc)}") from None
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _from_columns(
    path: Path,
    columns: dict[str, list[Any]],
    label_column: str,
    feature_columns: Sequence[str] | None,
    id_column: str | None,
    ts_column: str | None,
    classes: Sequence[str] | None,
    task: Task,
) -> Table:
    for name in (label_column, id_column, ts_column, *(feature_columns or [])):
        if name is not None and name not in columns:
            raise DataError(f"{path}: no column {name!r} (columns: {_names(columns)})")
    reserved = {label_column, id_column, ts_column}
    names = list(feature_columns or [c for c in columns if c not in reserved])
    if not names:
        raise DataError(f"{path}: no feature columns besides the label")
    if not columns[label_column]:
        raise DataError(f"{path}: no data rows")
    X = np.column_stack([_numeric(path, name, columns[name]) for name in names])
    ids = [str(v) for v in columns[id_column]] if id_column else None
    ts = _numeric(path, ts_column, columns[ts_column]) if ts_column else None
    if task == "regression":
        y = _targets(path, label_column, columns[label_column])
        return _regression_table(path, X, y, names, None, ids, ts, named=True)
    labels = [_label(value) for value in columns[label_column]]
    if any(label is None for label in labels):
        raise DataError(f"{path}: the label column {label_column!r} has empty values")
    return _table(path, X, labels, names, classes, None, ids, ts, named=True)


def _table(
    path: Path,
    X: np.ndarray,
    labels: list[str | None],
    names: list[str],
    classes: Sequence[str] | None,
    input_shape: list[int] | None,
    ids: list[str] | None,
    ts: np.ndarray | None,
    *,
    named: bool,
) -> Table:
    known = list(classes) if classes is not None else class_names(labels)
    index = {name: i for i, name in enumerate(known)}
    unknown = sorted({str(label) for label in labels if label not in index})
    if unknown:
        raise DataError(f"{path}: labels {unknown[:5]} are not among the classes {known}")
    y = np.fromiter((index[label] for label in labels), np.int64, len(labels))  # type: ignore[index]
    if ts is not None and not np.isfinite(ts).all():
        raise DataError(f"{path}: the timestamp column has empty or non-finite values")
    return Table(X, y, names, known, input_shape, ids, ts, named)


def _regression_table(
    path: Path,
    X: np.ndarray,
    y: np.ndarray,
    names: list[str],
    input_shape: list[int] | None,
    ids: list[str] | None,
    ts: np.ndarray | None,
    *,
    named: bool,
) -> Table:
    if ts is not None and not np.isfinite(ts).all():
        raise DataError(f"{path}: the timestamp column has empty or non-finite values")
    return Table(X, y, names, [], input_shape, ids, ts, named, task="regression")


def _targets(path: Path, name: str, values: list[Any]) -> np.ndarray:
    """A regression label column: every value a finite number (bools are not numbers)."""
    for i, value in enumerate(values):
        if isinstance(value, bool | np.bool_):
            raise DataError(f"{path}: the label column {name!r} holds {value!r} at row {i + 1}")
    y = _numeric(path, name, values, hint="a regression label column holds numbers")
    if np.isnan(y).any():
        raise DataError(f"{path}: the label column {name!r} has empty values")
    return y


def _numeric(
    path: Path,
    name: str,
    values: list[Any],
    hint: str = "encode it as numbers or leave it out with --feature-columns",
) -> np.ndarray:
    """A column as float64; an empty cell or null is NaN, anything else must be a number."""
    out = np.empty(len(values), np.float64)
    for i, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            out[i] = np.nan
            continue
        if isinstance(value, bool):
            out[i] = float(value)
            continue
        try:
            out[i] = float(value)
        except (TypeError, ValueError):
            raise DataError(
                f"{path}: column {name!r} is not numeric (row {i + 1}: {str(value)[:40]!r}); {hint}"
            ) from None
        if not math.isfinite(out[i]):
            raise DataError(f"{path}: column {name!r} holds {value!r} at row {i + 1}")
    return out


def _label(value: Any) -> str | None:
    """A label value as its class name: integral floats lose their ``.0`` (CSV vs Parquet)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return _label(value.item())
    return str(value).strip()


def class_names(labels: Sequence[str | None]) -> list[str]:
    """The distinct labels, sorted numerically when all are numbers.

    >>> class_names(["10", "2", "1", "2"])
    ['1', '2', '10']
    >>> class_names(["b", "a"])
    ['a', 'b']
    """
    distinct = {label for label in labels if label is not None}
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return sorted(distinct)


# -- NPZ -------------------------------------------------------------------------------------


def _load_npz(
    path: Path,
    label_column: str,
    feature_columns: Sequence[str] | None,
    id_column: str | None,
    ts_column: str | None,
    classes: Sequence[str] | None,
    task: Task = "classification",
) -> Table:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a plain .npz archive: {_one_line(exc)}") from None
    x_key = feature_columns[0] if feature_columns and len(feature_columns) == 1 else "X"
    for key in (x_key, label_column, id_column, ts_column):
        if key is not None and key not in arrays:
            raise DataError(f"{path}: no array {key!r} (arrays: {sorted(arrays)})")
    raw = arrays[x_key]
    if raw.ndim < 2 or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == np.bool_):
        raise DataError(f"{path}: {x_key!r} must be a numeric array (n, d) or (n, *shape)")
    X = raw.reshape(len(raw), -1).astype(np.float64)
    if not np.isfinite(X[~np.isnan(X)]).all():
        raise DataError(f"{path}: {x_key!r} holds infinite values")
    shape = [int(d) for d in raw.shape[1:]] if raw.ndim > 2 else None
    names = _npz_feature_names(path, arrays, X.shape[1])
    y = arrays[label_column]
    if y.shape != (len(X),):
        raise DataError(f"{path}: {label_column!r} has shape {y.shape}, expected ({len(X)},)")
    ids = [str(v) for v in arrays[id_column].tolist()] if id_column else None
    ts = arrays[ts_column].astype(np.float64) if ts_column else None
    named = "feature_names" in arrays
    if task == "regression":
        if not np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_:
            raise DataError(f"{path}: {label_column!r} must hold numbers, not {y.dtype}")
        targets = _targets(path, label_column, y.astype(np.float64).tolist())
        return _regression_table(path, X, targets, names, shape, ids, ts, named=named)
    labels = [_label(v) for v in y.tolist()]
    return _table(path, X, labels, names, classes, shape, ids, ts, named=named)


def _npz_feature_names(path: Path, arrays: dict[str, np.ndarray], d: int) -> list[str]:
    if "feature_names" not in arrays:
        return [f"x{j}" for j in range(d)]
    names = [str(v) for v in arrays["feature_names"].tolist()]
    if len(names) != d or len(set(names)) != d:
        raise DataError(f"{path}: feature_names must be {d} distinct names")
    return names


def _names(columns: dict[str, Any]) -> str:
    names = list(columns)
    return ", ".join(names[:10]) + (f", ... ({len(names)})" if len(names) > 10 else "")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "..."
