"""Read the team's churn CSV files by the declared table (contracts.CHURN_FEATURES), or reject them.

Types come from the declaration, never from the data: a numeric column holds numbers or empty cells, and
one stray word in it is a rejection naming the file, the column, the first rows and the fix, not a new
category. Columns the declaration does not name (an id, an index) are ignored and listed.

Row numbers in messages count as a spreadsheet does: the header is row 1, the first data row is row 2.

Only the standard library at import time: Prepare validates and splits without pandas, which only
`Table.frame()` (training, evaluation) loads.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import contracts

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FEATURES = contracts.feature_names()
NUMERIC_FEATURES = frozenset(contracts.feature_names(contracts.NUMERIC))
TARGET = contracts.TARGET_COLUMN
# The columns a table keeps, in this order: the declared features, then the target.
_COLUMNS = (*FEATURES, TARGET)
# At least this many rows to train on at all, and this many of each class in every split (train and each
# held-out one), so the evaluation sees both outcomes and its bootstrap spread means something.
MIN_ROWS = 100
MIN_CLASS_ROWS_PER_SPLIT = 5
# Offending rows a message shows; the count of the rest follows.
SHOWN_ROWS = 5
_SHOWN_VALUE_CHARS = 24
_ROWS_NOTE = "row 1 is the header"
_DECLARATION = "contracts.CHURN_FEATURES"


class DataRejected(ValueError):
    """The data breaks the contract. The message names the file, the column, the first rows and the fix."""

    def __init__(self, problem: str, *, fix: str, file: str | None = None, column: str | None = None,
                 rows: Sequence[int] = ()) -> None:
        self.problem = problem
        self.fix = fix
        self.file = file
        self.column = column
        self.rows = tuple(rows)
        """First offending rows (at most SHOWN_ROWS), counted with the header as row 1."""
        where = ", ".join(part for part in (file, f"column {column!r}" if column else None) if part)
        super().__init__(f"{where}: {problem}. Fix: {fix}" if where else f"{problem}. Fix: {fix}")


@dataclass(frozen=True)
class SourceFile:
    path: Path
    name: str
    """How messages and the report name it: the S3 URI it came from, else the path under the input."""


@dataclass
class Table:
    """Validated rows of one or more files: the declared columns' cell text (stripped; empty = missing)."""

    cells: dict[str, list[str]]
    """Feature and target columns in declared order; the target holds exactly "0" or "1"."""
    files: tuple[str, ...] = ()
    rows_per_file: dict[str, int] = field(default_factory=dict)
    ignored_columns: tuple[str, ...] = ()
    ignored_files: tuple[str, ...] = ()

    @property
    def rows(self) -> int:
        return len(self.cells[TARGET])

    @property
    def labels(self) -> list[int]:
        return [1 if v == "1" else 0 for v in self.cells[TARGET]]

    def class_counts(self) -> dict[int, int]:
        positives = self.cells[TARGET].count("1")
        return {0: self.rows - positives, 1: positives}

    def subset(self, indices: Sequence[int]) -> list[list[str]]:
        """Rows at `indices`, each in column order (features, then the target)."""
        columns = list(self.cells.values())
        return [[column[i] for column in columns] for i in indices]

    def frame(self) -> pd.DataFrame:
        """The table as the model sees it: numeric columns float (NaN when empty), categorical object
        (NaN when empty), the target int."""
        import pandas as pd

        nan = float("nan")
        data: dict[str, Any] = {}
        for name in FEATURES:
            values = self.cells[name]
            if name in NUMERIC_FEATURES:
                data[name] = pd.array([float(v) if v else nan for v in values], dtype="float64")
            else:
                data[name] = pd.Series([v if v else nan for v in values], dtype=object)
        data[TARGET] = pd.array(self.labels, dtype="int64")
        return pd.DataFrame(data)

    def features_and_target(self) -> tuple[pd.DataFrame, np.ndarray]:
        """What a model is fitted or scored on: the declared features (frame()'s types) and the 0/1 target."""
        frame = self.frame()  # the features in declared order, then the target
        return frame.drop(columns=[TARGET]), frame[TARGET].to_numpy()

    def report(self) -> dict[str, Any]:
        counts = self.class_counts()
        return {
            "files": list(self.files),
            "rows": self.rows,
            "rows_per_file": dict(self.rows_per_file),
            "churn_rate": round(counts[1] / self.rows, 6) if self.rows else None,
            "class_counts": {str(k): v for k, v in counts.items()},
            "ignored_columns": list(self.ignored_columns),
            "ignored_files": list(self.ignored_files),
        }


# --- Finding the files ------------------------------------------------------------------------------
def find_csv_files(root: Path, source_uri: str | None = None) -> tuple[list[SourceFile], list[str]]:
    """(CSV files under root, recursively, in path order; other files, ignored). Hidden files are skipped.

    `root` may also be one CSV file. `source_uri` is where root came from (an S3 prefix), so messages name
    files as the team knows them.
    """
    def display(relative: str) -> str:
        if source_uri:
            return source_uri.rstrip("/") + "/" + relative if relative else source_uri
        return str(root / relative) if relative else str(root)

    if root.is_file():
        return [SourceFile(root, display(""))], []
    if not root.is_dir():
        raise DataRejected("no such file or directory", file=display(""),
                           fix="point the input at the directory (or S3 prefix) that holds the CSV files")
    found: list[SourceFile] = []
    ignored: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.suffix.lower() == ".csv":
            found.append(SourceFile(path, display(relative.as_posix())))
        else:
            ignored.append(display(relative.as_posix()))
    return found, ignored


def read_dir(root: Path, source_uri: str | None = None, *, context: str = "") -> Table:
    """Every CSV file under root, validated and concatenated (see read_files). `context` explains an
    empty input (e.g. which shard of a sharded job this is)."""
    files, ignored = find_csv_files(root, source_uri)
    if not files:
        where = source_uri or str(root)
        others = f" (found only {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''})" if ignored else ""
        raise DataRejected(
            f"no CSV files{others}{context}", file=where,
            fix="put the churn table there as one or more UTF-8 files named *.csv with a header row "
                "(see README: Train on your own data)")
    table = read_files(files)
    table.ignored_files = tuple(ignored)
    return table


# --- Reading and validating ------------------------------------------------------------------------
def read_files(files: Sequence[SourceFile]) -> Table:
    """Validate and concatenate CSV files with the same header; DataRejected names the first problem."""
    if not files:
        raise DataRejected("no CSV files", fix="pass at least one *.csv file")
    parsed: list[tuple[str, list[str], dict[str, list[str]]]] = []
    for source in files:
        first = (parsed[0][0], parsed[0][1]) if parsed else None
        parsed.append((source.name, *_read_file(source, _COLUMNS, first)))
    return _table(parsed)


def read_text(text: str, name: str) -> Table:
    """A table given as CSV text (the synthetic sample), validated exactly as a file; `name` names it in messages."""
    try:
        header, columns = _parse(csv.reader(io.StringIO(text, newline="")), name, _COLUMNS, None)
    except csv.Error as exc:
        raise _not_csv(name, exc) from None
    return _table([(name, header, columns)])


def read_holdout(root: Path) -> Table:
    """A held-out split (validation, test: Prepare's output) under root, with both classes present."""
    table = read_dir(root)
    check_split_sizes(table.class_counts(), {}, where=str(root), min_rows=0)
    return table


def _table(parsed: Sequence[tuple[str, list[str], dict[str, list[str]]]]) -> Table:
    """One table of the (name, header, columns) of files that share the first one's header."""
    cells: dict[str, list[str]] = {column: [] for column in _COLUMNS}
    rows_per_file: dict[str, int] = {}
    for name, _header, columns in parsed:
        for column in _COLUMNS:
            cells[column].extend(columns[column])
        rows_per_file[name] = len(columns[TARGET])
    header = parsed[0][1]
    ignored = [_column_label(column, i) for i, column in enumerate(header) if column not in _COLUMNS]
    return Table(cells=cells, files=tuple(name for name, _, _ in parsed), rows_per_file=rows_per_file,
                 ignored_columns=tuple(ignored))


def _column_label(name: str, index: int) -> str:
    return name if name else f"(unnamed column {index + 1})"


def _read_file(source: SourceFile, wanted: Sequence[str], first: tuple[str, list[str]] | None
               ) -> tuple[list[str], dict[str, list[str]]]:
    name = source.name
    try:
        if source.path.stat().st_size == 0:
            raise DataRejected("the file is empty", file=name,
                               fix="remove it, or export the table again with a header row and data rows")
        with source.path.open(encoding="utf-8-sig", newline="") as handle:
            return _parse(csv.reader(handle), name, wanted, first)
    except UnicodeDecodeError:
        raise _not_utf8(source) from None
    except csv.Error as exc:
        raise _not_csv(name, exc) from None
    except OSError as exc:
        raise DataRejected(f"cannot be read ({exc.strerror or exc})", file=name,
                           fix="check that the file exists and is readable") from None


def _parse(reader: Iterable[list[str]], name: str, wanted: Sequence[str], first: tuple[str, list[str]] | None
           ) -> tuple[list[str], dict[str, list[str]]]:
    """Header, then rows; `first` is (name, header) of the table's first file, which this one must match."""
    records = iter(reader)
    row = 0
    header: list[str] | None = None
    for record in records:
        row += 1
        if not _blank(record):
            header = [cell.strip() for cell in record]
            break
    if header is None:
        raise DataRejected("the file is empty (no header row)", file=name,
                           fix="export the table again with a header row and data rows")
    positions = _positions(header, wanted, name)
    if first is not None and header != first[1]:
        raise _header_mismatch(name, header, *first)

    width = len(header)
    columns: dict[str, list[str]] = {column: [] for column in wanted}
    row_numbers: list[int] = []
    bad_width = _Offenders()
    for record in records:
        row += 1
        if len(record) != width:
            if not _blank(record):
                bad_width.add(row, str(len(record)))
            continue
        row_numbers.append(row)
        for column in wanted:
            columns[column].append(record[positions[column]].strip())
    if bad_width.count:
        shown = ", ".join(f"row {r} has {n}" for r, n in bad_width.shown)
        raise DataRejected(
            f"{bad_width.count} row(s) do not have the header's {width} fields ({shown}{bad_width.more}; "
            f"{_ROWS_NOTE})", file=name, rows=bad_width.rows,
            fix="quote cells that contain commas, and give every row one value per header column "
                "(an empty cell for a missing value)")
    if not row_numbers:
        raise DataRejected("the file has a header row but no data rows", file=name,
                           fix="add the rows, or remove the file")
    if TARGET in columns:
        _check_target(columns[TARGET], row_numbers, name)
    for column in wanted:
        if column in NUMERIC_FEATURES:
            _check_numeric(columns[column], row_numbers, name, column)
    return header, columns


def _not_csv(name: str, exc: csv.Error) -> DataRejected:
    return DataRejected(f"not readable as CSV ({exc})", file=name,
                        fix="export the table as comma-separated values (CSV) in UTF-8")


def _blank(record: Sequence[str]) -> bool:
    return len(record) <= 1 and not "".join(record).strip()


class _Offenders:
    """The first SHOWN_ROWS offending (row, value) pairs and how many there were in all."""

    def __init__(self) -> None:
        self.shown: list[tuple[int, str]] = []
        self.count = 0

    def add(self, row: int, value: str) -> None:
        self.count += 1
        if len(self.shown) < SHOWN_ROWS:
            self.shown.append((row, value))

    @property
    def rows(self) -> list[int]:
        return [row for row, _ in self.shown]

    @property
    def more(self) -> str:
        rest = self.count - len(self.shown)
        return f" and {rest} more" if rest else ""

    def values(self) -> str:
        """"'abc' (row 5), '' (row 9) and 3 more; row 1 is the header"."""
        def short(value: str) -> str:
            return repr(value if len(value) <= _SHOWN_VALUE_CHARS else value[:_SHOWN_VALUE_CHARS] + "...")

        listed = ", ".join(f"{short(v)} (row {r})" for r, v in self.shown)
        return f"{listed}{self.more}; {_ROWS_NOTE}"


def _positions(header: list[str], wanted: Sequence[str], name: str) -> dict[str, int]:
    """Index of every wanted column in the header; a duplicated or missing one is a rejection."""
    seen: dict[str, list[int]] = {}
    for index, column in enumerate(header):
        seen.setdefault(column, []).append(index)
    for column in wanted:
        if len(seen.get(column, ())) > 1:
            places = ", ".join(str(i + 1) for i in seen[column])
            raise DataRejected(
                f"the header names this column {len(seen[column])} times (columns {places})", file=name,
                column=column, fix=f"keep one column named {column!r} and rename or drop the others")
    missing = [column for column in wanted if column not in seen]
    if missing:
        found = ", ".join(repr(c) for c in header[:12]) + (" ..." if len(header) > 12 else "")
        problem = ("the target column is missing from the header" if missing == [TARGET] else
                   f"declared column(s) {', '.join(map(repr, missing))} missing from the header")
        fixes = [_hint(column, header) or _add(column) for column in missing]
        raise DataRejected(f"{problem} (found {found})", file=name, column=missing[0],
                           fix="; ".join(fixes) + " (names must match exactly; other columns are ignored)")
    return {column: seen[column][0] for column in wanted}


def _add(column: str) -> str:
    if column == TARGET:
        return f"add the label as a column {TARGET!r}: 1 for a customer who left, 0 for one who stayed"
    declared = next(c for c in contracts.CHURN_FEATURES if c.name == column)
    return f"add a column {column!r} ({declared.kind}: {declared.description})"


def _hint(column: str, header: Sequence[str]) -> str | None:
    def normal(text: str) -> str:
        return text.strip().lower().replace(" ", "_").replace("-", "_")

    for candidate in header:
        if normal(candidate) == normal(column):
            return f"rename {candidate!r} to {column!r}"
    close = difflib.get_close_matches(column, list(header), n=1, cutoff=0.8)
    return f"rename {close[0]!r} to {column!r} if it is that column" if close else None


def _check_target(values: list[str], row_numbers: Sequence[int], name: str) -> None:
    bad = _Offenders()
    for i, value in enumerate(values):
        if value in ("0", "1"):
            continue
        number = _number(value)
        if number in (0.0, 1.0):  # "1.0" from a float export: the same label
            values[i] = "1" if number else "0"
            continue
        bad.add(row_numbers[i], value)
    if bad.count:
        raise DataRejected(
            f"{bad.count} row(s) have a label other than 0 or 1: {bad.values()}", file=name, column=TARGET,
            rows=bad.rows,
            fix="write 1 for a customer who left and 0 for one who stayed in every row; drop rows without a label")


def _check_numeric(values: Sequence[str], row_numbers: Sequence[int], name: str, column: str) -> None:
    text = _Offenders()
    infinite = _Offenders()
    for i, value in enumerate(values):
        if not value:
            continue  # missing: imputed by the model
        number = _number(value)
        if number is None:
            text.add(row_numbers[i], value)
        elif math.isinf(number):
            infinite.add(row_numbers[i], value)
    if text.count:
        raise DataRejected(
            f"{text.count} cell(s) are not numbers: {text.values()}", file=name, column=column, rows=text.rows,
            fix=f"{column} is declared numeric ({_DECLARATION}): write plain numbers with a dot for decimals, "
                "no units or thousands separators, and leave a missing value empty")
    if infinite.count:
        raise DataRejected(
            f"{infinite.count} cell(s) are infinite: {infinite.values()}", file=name, column=column,
            rows=infinite.rows,
            fix="replace them with the real value, or leave the cell empty if it is unknown")


def _number(value: str) -> float | None:
    """A finite or infinite float for decimal text; None for anything else (words, 'nan', '1_000')."""
    if "_" in value:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _not_utf8(source: SourceFile) -> DataRejected:
    data = source.path.read_bytes()
    body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
    try:
        body.decode("utf-8")
        where, rows = "", ()
    except UnicodeDecodeError as exc:
        row = body[:exc.start].count(b"\n") + 1
        where, rows = f": byte 0x{body[exc.start]:02x} in row {row} ({_ROWS_NOTE})", (row,)
    hint = " (it looks like UTF-16)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
    return DataRejected(f"not UTF-8 text{hint}{where}", file=source.name, rows=rows,
                        fix="save the file as UTF-8 (in Excel: Save As > CSV UTF-8; a byte-order mark is fine)")


def _header_mismatch(name: str, header: list[str], first_name: str, first: list[str]) -> DataRejected:
    extra = [c for c in header if c not in first]
    absent = [c for c in first if c not in header]
    if extra or absent:
        parts = ([f"only here: {', '.join(map(repr, extra))}"] if extra else []) + (
            [f"only in {first_name}: {', '.join(map(repr, absent))}"] if absent else [])
        difference = "; ".join(parts)
    else:
        difference = "the same columns in another order"
    return DataRejected(
        f"the header differs from {first_name}'s ({difference})", file=name,
        fix="export every file of the table with the same header, or move the odd file out of the data prefix")


# --- Splitting -----------------------------------------------------------------------------------
def split_sizes(rows: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Rows each held-out split takes of `rows` (rounded half up), the rest under "train"."""
    sizes = {name: int(rows * fraction + 0.5) for name, fraction in fractions.items()}
    return {"train": rows - sum(sizes.values()), **sizes}


def stratified_split(labels: Sequence[int], fractions: Mapping[str, float], seed: int) -> dict[str, list[int]]:
    """Row indices per split: each class is shuffled (per seed) and cut by `fractions`, "train" gets the
    rest; within a split rows keep their input order. Disjoint, and together every row."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not a secret
    splits: dict[str, list[int]] = {"train": [], **{name: [] for name in fractions}}
    for label in sorted(set(labels)):
        members = [i for i, value in enumerate(labels) if value == label]
        rng.shuffle(members)
        start = 0
        for name, size in split_sizes(len(members), fractions).items():
            if name == "train":
                continue
            splits[name].extend(members[start:start + size])
            start += size
        splits["train"].extend(members[start:])
    return {name: sorted(indices) for name, indices in splits.items()}


def check_split_sizes(counts: Mapping[int, int], fractions: Mapping[str, float], *, where: str,
                      min_rows: int = MIN_ROWS) -> None:
    """Reject a table too small, or with too few of a class, to give every split (train and the held-out
    ones, cut per class by `fractions`) MIN_CLASS_ROWS_PER_SPLIT rows of each class."""
    rows = sum(counts.values())
    if rows < min_rows:
        raise DataRejected(
            f"only {rows} data row(s); training needs at least {min_rows}", file=where,
            fix=f"add rows (at least {min_rows}, with both churn=0 and churn=1 customers)")
    for label in contracts.TARGET_VALUES:
        have = counts.get(label, 0)
        sizes = split_sizes(have, fractions)
        short = {split: n for split, n in sizes.items() if n < MIN_CLASS_ROWS_PER_SPLIT}
        if short:
            need = _rows_needed(fractions)
            held_out = ", ".join(f"{name} {fraction:.0%}" for name, fraction in fractions.items())
            detail = (f"; split {held_out} and train the rest, that leaves "
                      + ", ".join(f"{n} in {split}" for split, n in short.items())) if fractions else ""
            raise DataRejected(
                f"only {have} row(s) with {TARGET}={label}{detail}; every split needs at least "
                f"{MIN_CLASS_ROWS_PER_SPLIT} of each class", file=where, column=TARGET,
                fix=f"add rows with {TARGET}={label} (at least {need} in all)")


def _rows_needed(fractions: Mapping[str, float]) -> int:
    """Smallest class size whose every split reaches MIN_CLASS_ROWS_PER_SPLIT."""
    n = MIN_CLASS_ROWS_PER_SPLIT
    while min(split_sizes(n, fractions).values()) < MIN_CLASS_ROWS_PER_SPLIT:
        n += 1
    return n
