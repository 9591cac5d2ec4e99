"""training/data_contract.py: the churn table is read by its declaration; each rejection says where and how to fix."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import pandas as pd
import pytest

import contracts
from training import data_contract
from training.data_contract import DataRejected, read_dir
from training.sample_data import make_dataset, sample_csv, write_sample

HEADER_NOTE = "row 1 is the header"


def _rows(n: int = 200, seed: int = 5) -> list[list[str]]:
    """The sample table as cell text, header first."""
    return list(csv.reader(io.StringIO(sample_csv(n, seed).decode())))


def _write(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _set(rows: list[list[str]], column: str, values: dict[int, str]) -> list[list[str]]:
    """Change cells of `column`; keys are row numbers as the messages count them (header = row 1)."""
    index = rows[0].index(column)
    for row_number, value in values.items():
        rows[row_number - 1][index] = value
    return rows


def _rejection(directory: Path) -> DataRejected:
    with pytest.raises(DataRejected) as caught:
        read_dir(directory)
    return caught.value


# --- What is accepted ---------------------------------------------------------------------------------
def test_sample_table_passes_the_contract_with_the_declared_columns_in_order(tmp_path: Path) -> None:
    (tmp_path / "churn.csv").write_bytes(sample_csv(500, 3))
    table = read_dir(tmp_path)
    assert list(table.cells) == [*contracts.feature_names(), contracts.TARGET_COLUMN]
    assert table.rows == 500 and table.ignored_columns == ()


def test_csv_text_is_read_and_rejected_exactly_as_a_file(tmp_path: Path) -> None:
    rows = _set(_rows(150), "monthly_charges", {4: "n/a"})
    path = _write(tmp_path / "churn.csv", rows)
    text = path.read_text(encoding="utf-8")
    with pytest.raises(DataRejected) as from_text:
        data_contract.read_text(text, str(path))
    assert str(from_text.value) == str(_rejection(tmp_path))
    good = _write(tmp_path / "good" / "churn.csv", _rows(150))
    pd.testing.assert_frame_equal(data_contract.read_text(good.read_text(encoding="utf-8"), "sample").frame(),
                                  read_dir(good.parent).frame())


def test_writing_the_sample_leaves_an_equal_file_alone_and_replaces_another_whole(tmp_path: Path) -> None:
    written = write_sample(tmp_path, 200, 4)
    assert written == tmp_path / contracts.SAMPLE_FILE and written.read_bytes() == sample_csv(200, 4)
    os.utime(written, ns=(1_000_000_000, 1_000_000_000))
    assert write_sample(tmp_path, 200, 4) == written
    assert written.stat().st_mtime_ns == 1_000_000_000  # the same bytes: not rewritten
    written.write_bytes(b"tenure_months\n")
    write_sample(tmp_path, 200, 4)
    assert written.read_bytes() == sample_csv(200, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [contracts.SAMPLE_FILE]  # nothing left aside


def test_sample_csv_is_byte_identical_per_seed() -> None:
    assert sample_csv(400, 1) == sample_csv(400, 1)
    assert sample_csv(400, 1) != sample_csv(400, 2)


def test_sample_columns_have_the_declared_kinds() -> None:
    frame = make_dataset(300, 2)
    for column in contracts.CHURN_FEATURES:
        is_numeric = pd.api.types.is_numeric_dtype(frame[column.name])
        assert is_numeric == (column.kind == contracts.NUMERIC), column.name


def test_types_come_from_the_declaration_not_from_the_values(tmp_path: Path) -> None:
    # Digits in a categorical column stay categories; a numeric column that is empty throughout stays numeric.
    rows = _rows(120)
    rows = _set(rows, "contract_type", {r: str(r % 3) for r in range(2, 122)})
    rows = _set(rows, "support_calls", {r: "" for r in range(2, 122)})
    _write(tmp_path / "churn.csv", rows)
    frame = read_dir(tmp_path).frame()
    assert frame["contract_type"].dtype == object
    assert set(frame["contract_type"]) == {"0", "1", "2"}
    assert frame["support_calls"].dtype == "float64"
    assert bool(frame["support_calls"].isna().all())
    assert frame[contracts.TARGET_COLUMN].dtype == "int64"


def test_empty_cells_are_missing_values_nan_in_both_kinds(tmp_path: Path) -> None:
    rows = _set(_set(_rows(), "monthly_charges", {2: ""}), "payment_method", {3: "  "})
    _write(tmp_path / "churn.csv", rows)
    frame = read_dir(tmp_path).frame()
    assert math.isnan(frame["monthly_charges"].iloc[0])
    assert isinstance(frame["payment_method"].iloc[1], float) and math.isnan(frame["payment_method"].iloc[1])


def test_undeclared_columns_are_ignored_and_listed(tmp_path: Path) -> None:
    rows = _rows()
    rows = [[f"id-{i}" if i else "customer_id", *row, "x"] for i, row in enumerate(rows)]
    rows[0][-1] = "region"
    _write(tmp_path / "churn.csv", rows)
    table = read_dir(tmp_path)
    assert table.ignored_columns == ("customer_id", "region")
    assert list(table.frame().columns) == [*contracts.feature_names(), contracts.TARGET_COLUMN]


def test_column_order_in_the_file_does_not_matter(tmp_path: Path) -> None:
    rows = _rows()
    reordered = [list(reversed(row)) for row in rows]
    _write(tmp_path / "a" / "churn.csv", rows)
    _write(tmp_path / "b" / "churn.csv", reordered)
    pd.testing.assert_frame_equal(read_dir(tmp_path / "a").frame(), read_dir(tmp_path / "b").frame())


def test_a_byte_order_mark_is_fine(tmp_path: Path) -> None:
    (tmp_path / "churn.csv").write_bytes(b"\xef\xbb\xbf" + sample_csv(150, 4))
    assert read_dir(tmp_path).rows == 150


def test_labels_written_as_floats_are_the_same_labels(tmp_path: Path) -> None:
    rows = _rows()
    rows = _set(rows, contracts.TARGET_COLUMN, {2: "1.0", 3: "0.0"})
    _write(tmp_path / "churn.csv", rows)
    assert read_dir(tmp_path).cells[contracts.TARGET_COLUMN][:2] == ["1", "0"]


def test_files_are_read_recursively_in_path_order_and_other_files_listed(tmp_path: Path) -> None:
    rows = _rows(300)
    _write(tmp_path / "2024" / "b.csv", [rows[0], *rows[151:]])
    _write(tmp_path / "2024" / "a.csv", rows[:151])
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".hidden.csv").write_text("not,read\n")
    table = read_dir(tmp_path, "s3://bucket/dev/training-data/")
    assert table.files == ("s3://bucket/dev/training-data/2024/a.csv", "s3://bucket/dev/training-data/2024/b.csv")
    assert table.ignored_files == ("s3://bucket/dev/training-data/_SUCCESS",)
    assert table.rows == 300


# --- Rejections: one per rule, each naming the file, the column, the rows and the fix ------------------
def test_no_csv_files_is_rejected_naming_the_location_and_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "churn.xlsx").write_bytes(b"PK")
    error = _rejection(tmp_path)
    assert error.file == str(tmp_path)
    assert "no CSV files (found only " in str(error) and "churn.xlsx" in str(error)
    assert "*.csv" in error.fix


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", _rows())
    (tmp_path / "b.csv").write_bytes(b"")
    error = _rejection(tmp_path)
    assert error.file == str(tmp_path / "b.csv")
    assert "the file is empty" in str(error) and "remove it" in error.fix


def test_header_without_data_rows_is_rejected(tmp_path: Path) -> None:
    _write(tmp_path / "a.csv", _rows()[:1])
    assert "has a header row but no data rows" in str(_rejection(tmp_path))


def test_text_that_is_not_utf8_is_rejected_naming_the_row_and_byte(tmp_path: Path) -> None:
    text = sample_csv(150, 4).decode()
    lines = text.splitlines(keepends=True)
    lines[6] = lines[6].replace("dsl", "dsl\u00e9", 1) if "dsl" in lines[6] else lines[6].replace(",", ",\u00e9", 1)
    (tmp_path / "latin.csv").write_bytes("".join(lines).encode("latin-1"))
    error = _rejection(tmp_path)
    assert error.file == str(tmp_path / "latin.csv") and error.rows == (7,)
    assert f"not UTF-8 text: byte 0xe9 in row 7 ({HEADER_NOTE})" in str(error)
    assert "CSV UTF-8" in error.fix


def test_utf16_export_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "excel.csv").write_bytes(sample_csv(150, 4).decode().encode("utf-16"))
    assert "not UTF-8 text (it looks like UTF-16)" in str(_rejection(tmp_path))


def test_missing_declared_column_is_rejected_with_the_likely_rename(tmp_path: Path) -> None:
    rows = _rows()
    rows[0][rows[0].index("tenure_months")] = "Tenure Months"
    _write(tmp_path / "churn.csv", rows)
    error = _rejection(tmp_path)
    assert error.column == "tenure_months" and error.file == str(tmp_path / "churn.csv")
    assert "declared column(s) 'tenure_months' missing from the header" in str(error)
    assert error.fix.startswith("rename 'Tenure Months' to 'tenure_months'")


def test_missing_target_column_is_rejected_saying_what_the_label_means(tmp_path: Path) -> None:
    rows = [row[:-1] for row in _rows()]
    _write(tmp_path / "churn.csv", rows)
    error = _rejection(tmp_path)
    assert error.column == contracts.TARGET_COLUMN
    assert "the target column is missing from the header" in str(error)
    assert "1 for a customer who left, 0 for one who stayed" in error.fix


def test_duplicated_column_is_rejected_naming_both_positions(tmp_path: Path) -> None:
    rows = [[*row, row[1]] for row in _rows()]
    _write(tmp_path / "churn.csv", rows)
    error = _rejection(tmp_path)
    assert error.column == "monthly_charges"
    assert "the header names this column 2 times (columns 2, 12)" in str(error)
    assert "keep one column named 'monthly_charges'" in error.fix


def test_headers_that_differ_between_files_are_rejected(tmp_path: Path) -> None:
    rows = _rows()
    _write(tmp_path / "a.csv", rows)
    _write(tmp_path / "b.csv", [[*row, "x"] for row in rows])
    error = _rejection(tmp_path)
    assert error.file == str(tmp_path / "b.csv")
    assert f"the header differs from {tmp_path / 'a.csv'}'s (only here: 'x')" in str(error)
    assert "same header" in error.fix


def test_same_columns_in_another_order_between_files_are_rejected(tmp_path: Path) -> None:
    rows = _rows()
    _write(tmp_path / "a.csv", rows)
    _write(tmp_path / "b.csv", [list(reversed(row)) for row in rows])
    assert "(the same columns in another order)" in str(_rejection(tmp_path))


def test_text_in_a_numeric_column_is_rejected_with_the_first_rows_and_values(tmp_path: Path) -> None:
    rows = _set(_rows(), "monthly_charges", {5: "12,50", 9: "n/a", 12: "abc", 20: "NaN", 30: "1_000", 40: "x", 41: "y"})
    _write(tmp_path / "churn.csv", rows)
    error = _rejection(tmp_path)
    assert (error.file, error.column) == (str(tmp_path / "churn.csv"), "monthly_charges")
    assert error.rows == (5, 9, 12, 20, 30)
    assert (f"7 cell(s) are not numbers: '12,50' (row 5), 'n/a' (row 9), 'abc' (row 12), 'NaN' (row 20), "
            f"'1_000' (row 30) and 2 more; {HEADER_NOTE}") in str(error)
    assert "declared numeric" in error.fix and "leave a missing value empty" in error.fix


def test_row_numbers_count_blank_lines_as_a_spreadsheet_does(tmp_path: Path) -> None:
    rows = _set(_rows(), "tenure_months", {4: "ten"})
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows[:2])
    text.write("\n")  # row 3 is blank
    csv.writer(text, lineterminator="\n").writerows(rows[2:])  # "ten" now sits on row 5
    (tmp_path / "churn.csv").write_text(text.getvalue())
    assert _rejection(tmp_path).rows == (5,)


def test_infinity_in_a_numeric_column_is_rejected(tmp_path: Path) -> None:
    rows = _set(_rows(), "total_charges", {3: "inf", 8: "-Infinity"})
    _write(tmp_path / "churn.csv", rows)
    error = _rejection(tmp_path)
    assert (error.column, error.rows) == ("total_charges", (3, 8))
    assert f"2 cell(s) are infinite: 'inf' (row 3), '-Infinity' (row 8); {HEADER_NOTE}" in str(error)
    assert "leave the cell empty" in error.fix


@pytest.mark.parametrize("label", ["yes", "2", "", "0.5"])
def test_a_label_other_than_0_or_1_is_rejected(tmp_path: Path, label: str) -> None:
    rows = _set(_rows(), contracts.TARGET_COLUMN, {6: label})
    _write(tmp_path / "churn.csv", rows)
    error = _rejection(tmp_path)
    assert (error.column, error.rows) == (contracts.TARGET_COLUMN, (6,))
    assert f"1 row(s) have a label other than 0 or 1: {label!r} (row 6)" in str(error)
    assert "write 1 for a customer who left and 0 for one who stayed" in error.fix


def test_a_row_with_the_wrong_number_of_fields_is_rejected(tmp_path: Path) -> None:
    rows = _rows()
    rows[9] = [*rows[9], "extra"]
    rows[14] = rows[14][:-2]
    _write(tmp_path / "churn.csv", rows)
    error = _rejection(tmp_path)
    assert error.rows == (10, 15)
    assert f"2 row(s) do not have the header's 11 fields (row 10 has 12, row 15 has 9; {HEADER_NOTE})" in str(error)
    assert "quote cells that contain commas" in error.fix


def test_too_few_rows_are_rejected() -> None:
    with pytest.raises(DataRejected, match=r"only 60 data row\(s\); training needs at least 100") as caught:
        data_contract.check_split_sizes({0: 40, 1: 20}, {"test": 0.2}, where="s3://b/p/")
    assert caught.value.file == "s3://b/p/" and "add rows" in caught.value.fix


def test_too_few_of_a_class_to_hold_out_the_splits_is_rejected() -> None:
    with pytest.raises(DataRejected) as caught:
        data_contract.check_split_sizes({0: 500, 1: 20}, {"test": 0.2, "validation": 0.2}, where="s3://b/p/")
    error = caught.value
    assert error.column == contracts.TARGET_COLUMN
    assert ("only 20 row(s) with churn=1; split test 20%, validation 20% and train the rest, that leaves "
            "4 in test, 4 in validation; every split needs at least 5 of each class") in str(error)
    assert error.fix == "add rows with churn=1 (at least 23 in all)"


def test_a_class_that_is_absent_is_rejected() -> None:
    with pytest.raises(DataRejected, match=r"only 0 row\(s\) with churn=0"):
        data_contract.check_split_sizes({0: 0, 1: 300}, {"test": 0.2}, where="x")


def test_the_smallest_accepted_class_size_really_splits() -> None:
    fractions = {"test": 0.2, "validation": 0.2}
    data_contract.check_split_sizes({0: 200, 1: 23}, fractions, where="x")
    assert min(data_contract.split_sizes(23, fractions).values()) >= data_contract.MIN_CLASS_ROWS_PER_SPLIT


def test_readme_lists_exactly_the_declared_columns_with_their_kinds() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("<!-- section:own-data -->", 1)[1].split("<!-- /section:own-data -->", 1)[0]
    table = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| `")]
    rows = [tuple(cell.strip().strip("`") for cell in cells) for cells in table]
    declared = [(c.name, c.kind, c.description) for c in contracts.CHURN_FEATURES]
    assert rows == [*declared, (contracts.TARGET_COLUMN, "target", "1 if the customer left, 0 if they stayed")]
