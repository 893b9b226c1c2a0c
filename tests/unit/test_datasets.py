"""Reading users' data files: CSV, Parquet, NPZ; every problem is one DataError line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from streamapp.codec import Codec
from streamapp.datasets import load_table
from streamapp.errors import DataError
from streamapp.scenarios.produce import table_records
from tests.fakes import FakeMessage


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_columns_become_features_and_label_values_classes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,b,label,id\n1,2,10,x\n3,,2,y\n5,6,10,z\n")
    table = load_table(path, "label", id_column="id")
    assert table.feature_names == ["a", "b"]
    assert table.classes == ["2", "10"]  # numeric labels sort as numbers
    assert table.y.tolist() == [1, 0, 1]
    assert table.ids == ["x", "y", "z"]
    assert np.isnan(table.X[1, 1]) and table.X[2].tolist() == [5.0, 6.0]


def test_parquet_and_csv_give_the_same_table(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    csv_path = write_csv(tmp_path / "d.csv", "a,b,label\n1.5,2,1\n3,4,0\n")
    pq.write_table(pa.table({"a": [1.5, 3.0], "b": [2, 4], "label": [1, 0]}), tmp_path / "d.pq")
    from_csv, from_pq = load_table(csv_path, "label"), load_table(tmp_path / "d.pq", "label")
    assert from_pq.classes == from_csv.classes == ["0", "1"]
    assert (from_pq.X == from_csv.X).all() and (from_pq.y == from_csv.y).all()


def test_npz_shaped_features_set_the_input_shape(tmp_path: Path) -> None:
    X = np.arange(2 * 1 * 2 * 3, dtype=np.float32).reshape(2, 1, 2, 3)
    np.savez(tmp_path / "d.npz", X=X, y=np.array(["cat", "dog"]))
    table = load_table(tmp_path / "d.npz", "y")
    assert table.input_shape == [1, 2, 3]
    assert table.X.shape == (2, 6) and table.classes == ["cat", "dog"]


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b"\xef\xbb\xbflabel,a\n1,2\n0,3\n")  # Excel's "CSV UTF-8"
    table = load_table(path, "label")
    assert table.feature_names == ["a"] and table.classes == ["0", "1"]


def test_a_replay_sends_named_columns_by_name_whatever_their_order(tmp_path: Path) -> None:
    """A target file whose columns come in another order than the model's is scored on the
    right features (it was scored on swapped ones, silently); an unnamed NPZ goes by position."""
    path = write_csv(tmp_path / "target.csv", "f2,f1,label\n20,10,a\n")
    [event, _] = table_records(load_table(path, "label"), start_ts=0)
    codec = Codec(["f1", "f2"], ["a", "b"])
    message = FakeMessage("features", value=orjson.dumps(event.value), timestamp_ms=1000)
    assert codec.decode_batch([message], now=1.0).features.X.tolist() == [[10.0, 20.0]]
    np.savez(tmp_path / "d.npz", X=np.array([[1.0, 2.0]]), y=np.array(["a"]))
    [event, _] = table_records(load_table(tmp_path / "d.npz", "y"), start_ts=0)
    assert event.value["features"] == [1.0, 2.0]


@pytest.mark.parametrize(
    ("text", "label", "message"),
    [
        ("a,label\n1,0\n", "nope", "no column 'nope'"),
        ("a,label\nx,0\n", "label", "column 'a' is not numeric"),
        ("a,label\n1,0\n2\n", "label", "line 3 has 1 fields"),
        ("", "label", "empty file"),
    ],
)
def test_bad_files_are_one_line(tmp_path: Path, text: str, label: str, message: str) -> None:
    path = write_csv(tmp_path / "d.csv", text)
    with pytest.raises(DataError, match=message) as caught:
        load_table(path, label)
    assert "\n" not in str(caught.value)


def test_a_pickled_npz_and_unknown_formats_are_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", X=np.array([[object()]], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match=r"not a plain \.npz"):
        load_table(tmp_path / "d.npz", "y")
    (tmp_path / "d.xlsx").write_bytes(b"PK")
    with pytest.raises(DataError, match="unknown data format"):
        load_table(tmp_path / "d.xlsx", "y")


def test_training_refuses_missing_values_and_a_single_class(tmp_path: Path) -> None:
    table = load_table(write_csv(tmp_path / "d.csv", "a,label\n1,0\n,0\n"), "label")
    with pytest.raises(DataError, match="1 missing feature values"):
        table.require_complete()
    with pytest.raises(DataError, match="1 class"):
        table.require_classes()
