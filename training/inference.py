"""Serving code for the churn model: the four functions the SageMaker scikit-learn container calls.

Shipped inside model.tar.gz as code/inference.py and run by the scikit-learn image 1.4-2 (SAGEMAKER_PROGRAM)
through sagemaker-containers' Transformer, so it imports only what that image has: the standard library,
numpy, pandas, scikit-learn and joblib -- never `contracts` or `training`, which are not in the image.

What the container hands these functions (sagemaker-containers 2.8.6.post2):
- input_fn(input_data, content_type): the raw Content-Type header, parameters included; `application/json`
  when the request has none. `input_data` is str (decoded as UTF-8, undecodable bytes replaced by U+FFFD)
  only when the header is exactly `text/csv` or `application/json`, bytes otherwise.
- output_fn(prediction, accept): the raw Accept header (a list with q-values is passed as is);
  SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT (default `application/json`) when it is missing or exactly `*/*`.
- Any exception becomes HTTP 500 and its message reaches only the endpoint's CloudWatch log. So every bad
  request raises an InferenceError whose message names the problem, the place (feature, CSV line or JSON
  row) and the fix; its `.status` is what a server able to answer 4xx (the local model server) answers.

Requests: `text/csv` (rows of features, with or without a header row; an empty field is a missing value)
or `application/json` (a list of objects, or {"instances": [...]} whose items are objects or positional
lists; null is a missing value). NaN -- the text `nan` in any case, or JSON's NaN -- is a missing value
in both, as in pandas. Missing values are imputed by the model; a row with no values at all is refused.
Responses: `application/json` -> {"predictions": [{"churn_probability": p, "churn": 0|1}, ...]};
`text/csv` -> one "p,label" line per row; p has 6 decimals.

Large well-formed CSV bodies are parsed by pandas' C reader and answers are formatted with numpy; any
request the fast path is unsure of goes through the validating path, which defines the behaviour and
owns every error message. Both give the model the same values, so predictions do not depend on the path.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import operator
import os
import re
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import joblib
import numpy as np
import pandas as pd

MODEL_FILE = "model.joblib"
CSV = "text/csv"
JSON = "application/json"
SUPPORTED = (CSV, JSON)
# The container's answer type for a request without Accept (or with exactly */*); read here too so that
# */* inside a list of types resolves to the same answer.
DEFAULT_ACCEPT_ENV = "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT"
# Same value as training.train.LABEL_THRESHOLD, so the endpoint labels as the evaluation did.
THRESHOLD = 0.5
# Names train.py gives its pipeline steps; the round-trip tests keep both files in step.
_PREPROCESS_STEP = "preprocess"
_NUMERIC_TRANSFORMER = "numeric"
_TARGET_COLUMN = "churn"
# Below this many characters a CSV body is parsed by the validating path alone: pandas' C reader costs
# about a millisecond to start, more than the validating path spends on a few dozen rows.
_FAST_CSV_MIN_CHARS = 32_000
# Below this many rows answers are formatted by Python, which is faster than numpy's setup for a few rows.
_FAST_ANSWER_MIN_ROWS = 32
_MISSING_TEXT = ("", "nan")
_PLAIN_NUMBER = re.compile(r"[0-9.+-]*")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_PLAIN_NUMBER_CHARS = 15
# Whitespace that str.strip() would trim from a cell, line breaks aside (re's \s is str.isspace()).
_INNER_SPACE = re.compile(r"[^\S\r\n]")
_LEADING_SPACE = re.compile(r"\s*")


class InferenceError(Exception):
    """A request the model cannot answer; `.status` is the HTTP status to reply with."""

    status = 400


class BadRequest(InferenceError):
    status = 400


class UnsupportedContentType(InferenceError):
    status = 415


class UnsupportedAccept(InferenceError):
    status = 406


# --- Media types --------------------------------------------------------------------------------------------
def _media_and_params(value: str) -> tuple[str, dict[str, str]]:
    """'text/csv; charset=UTF-8' -> ('text/csv', {'charset': 'UTF-8'})."""
    media, *parts = value.split(";")
    params: dict[str, str] = {}
    for part in parts:
        key, _, raw = part.partition("=")
        if key.strip():
            params[key.strip().lower()] = raw.strip().strip('"')
    return media.strip().lower(), params


def _default_answer_type() -> str:
    media = _media_and_params(os.environ.get(DEFAULT_ACCEPT_ENV) or JSON)[0]
    return media if media in SUPPORTED else JSON


def negotiate(accept: str | None) -> str:
    """The answer type for an Accept header, as HTTP negotiates it.

    Each type we produce takes the q-value of the most specific range that matches it (`text/csv` before
    `text/*` before `*/*`); q=0 refuses it. The highest q wins, then the range listed first, then the
    default answer type. A `charset` other than UTF-8 is a type we do not produce.
    """
    header = accept if accept and accept.strip() else _default_answer_type()
    ranges: list[tuple[str, float]] = []
    for item in header.split(","):
        if not item.strip():
            continue
        media, params = _media_and_params(item)
        quality = 1.0
        if "q" in params:
            try:
                quality = float(params["q"])
            except ValueError:
                quality = -1.0
            if not 0.0 <= quality <= 1.0:
                raise UnsupportedAccept(f"Accept {header!r}: q={params['q']!r} is not a number from 0 to 1; "
                                        "send e.g. 'application/json, text/csv;q=0.5'")
        if params.get("charset", "utf-8").lower().replace("_", "-") not in ("utf-8", "utf8"):
            continue
        ranges.append((media, quality))
    default = _default_answer_type()
    best: tuple[float, int, int, str] | None = None
    for preference, candidate in enumerate(sorted(SUPPORTED, key=lambda t: t != default)):
        kind = candidate.split("/")[0]
        matches = [(specificity, -position, quality)
                   for position, (media, quality) in enumerate(ranges)
                   for specificity, pattern in ((2, candidate), (1, f"{kind}/*"), (0, "*/*"))
                   if media == pattern]
        if not matches:
            continue
        _, negative_position, quality = max(matches)
        if quality <= 0:
            continue
        rank = (quality, negative_position, -preference, candidate)
        if best is None or rank > best:
            best = rank
    if best is None:
        raise UnsupportedAccept(f"Accept {header!r} names no type this model answers with; "
                                f"ask for {' or '.join(SUPPORTED)} (or */*)")
    return best[3]


# --- The four functions -------------------------------------------------------------------------------------
def model_fn(model_dir: str) -> Any:
    path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{MODEL_FILE} not found in {model_dir}; the model archive must contain it at its root")
    return joblib.load(path)


def input_fn(input_data: str | bytes, content_type: str | None) -> Rows:
    """Decode and check the body; its rows are typed by the model's schema in predict_fn."""
    declared = content_type or JSON  # the container's default for a request without Content-Type
    media, params = _media_and_params(declared)
    if media not in SUPPORTED:
        raise UnsupportedContentType(f"Content-Type {declared!r} is not supported; send {' or '.join(SUPPORTED)}")
    text = _decode(input_data, params.get("charset"))
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark, as spreadsheet programs write before UTF-8 CSV
    leading = _LEADING_SPACE.match(text)
    first = leading.end() if leading else 0
    start = text[first:first + 1]
    if not start:
        raise BadRequest("request body is empty; send at least one row of features")
    if media == CSV:
        if start in "[{":
            raise BadRequest(f"the body looks like JSON but Content-Type is {declared!r}; "
                             "send it with Content-Type: application/json")
        nul = text.find("\x00")
        if nul >= 0:
            # Python's csv module refused NUL up to 3.10 (the image's) and takes it from 3.11: refuse it here.
            raise BadRequest(f"malformed CSV on line {text.count(chr(10), 0, nul) + 1}: a NUL byte; send text")
        return Rows("csv", text=text)
    return _parse_json(text, declared)


def predict_fn(input_data: Rows, model: Any) -> np.ndarray:
    """Churn probability per row."""
    frame = input_data.frame(_schema(model))
    return model.predict_proba(frame)[:, 1]


def output_fn(prediction: Any, accept: str | None) -> tuple[str, str]:
    """(body, content type): the scikit-learn container turns a tuple into the HTTP response."""
    media = negotiate(accept)
    probabilities = np.asarray(prediction, dtype=np.float64).ravel()
    if media == JSON:
        return _json_answer(probabilities), JSON
    return _csv_answer(probabilities), CSV


# --- Decoding -------------------------------------------------------------------------------------------------
def _decode(data: str | bytes, charset: str | None) -> str:
    if isinstance(data, str):
        if "\ufffd" in data:
            raise BadRequest("request body is not valid UTF-8 (the serving container replaced bytes it could not "
                             "decode with U+FFFD); send UTF-8, or name the encoding: "
                             "Content-Type: text/csv; charset=latin-1")
        return data
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"input_fn got {type(data).__name__}; the container passes str or bytes")
    encoding = charset or "utf-8"
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise UnsupportedContentType(f"charset {encoding!r} is not a known encoding; send UTF-8 "
                                     "(charset=utf-8)") from None
    try:
        return bytes(data).decode(codec.name)
    except UnicodeDecodeError as exc:
        raise BadRequest(f"request body is not valid {encoding} text (byte {exc.start}: {exc.reason}); send UTF-8, "
                         "or name the body's encoding: Content-Type: text/csv; charset=latin-1") from None


def _parse_json(text: str, declared: str) -> Rows:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        first_line = text.lstrip().split("\n", 1)[0]
        hint = ""
        if "," in first_line and first_line[:1] not in "[{\"":
            hint = ("; the body looks like CSV rows: send Content-Type: text/csv "
                    "(a request without Content-Type is read as application/json)")
        raise BadRequest(f"malformed JSON (Content-Type {declared!r}): {exc.msg} at line {exc.lineno} "
                         f"column {exc.colno}{hint}") from None
    except RecursionError:
        raise BadRequest("JSON is nested too deeply; send a list of rows, each an object of feature values "
                         "or a list of them in column order") from None
    if isinstance(payload, dict):
        if "instances" not in payload:
            raise BadRequest('JSON object must have an "instances" list; or send a list of objects')
        payload = payload["instances"]
    if not isinstance(payload, list) or not payload:
        raise BadRequest("JSON must be a non-empty list of rows (objects of feature values, or lists in column order)")
    if all(type(item) is dict for item in payload):
        return Rows("records", items=payload)
    if all(type(item) is list for item in payload):
        return Rows("lists", items=payload)
    first = type(payload[0])
    for index, item in enumerate(payload, start=1):
        if type(item) is not first or first not in (dict, list):
            raise BadRequest(f"JSON row {index} is {_json_kind(item)}: every row must be an object (feature -> "
                             "value), or every row a list of values in column order, not a mix")
    raise AssertionError("unreachable")  # pragma: no cover


def _cut(text: str) -> str:
    """A value as a message shows it: cut short if it is long."""
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} characters)"


def _shown(value: Any) -> str:
    return _cut(json.dumps(value))


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


# --- The model's schema -------------------------------------------------------------------------------------
class Schema(NamedTuple):
    """The feature columns the model was fitted on, in order, and which of them are numeric."""

    names: tuple[str, ...]
    numeric: frozenset[str]

    def order(self) -> str:
        return ", ".join(self.names)


@lru_cache(maxsize=8)
def _schema(model: Any) -> Schema:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise TypeError("model was not fitted on a table with column names; retrain it with training/train.py")
    ordered = tuple(str(n) for n in names)
    # Numeric columns as the pipeline declared them, so text is converted the way the model was trained.
    steps = getattr(model, "named_steps", {})
    preprocess = steps.get(_PREPROCESS_STEP) if hasattr(steps, "get") else None
    for name, _transformer, columns in getattr(preprocess, "transformers_", []):
        if name == _NUMERIC_TRANSFORMER:
            return Schema(ordered, frozenset(str(c) for c in columns))
    return Schema(ordered, frozenset(ordered))


# --- Rows -> typed frame ------------------------------------------------------------------------------------
class Rows:
    """A decoded request: CSV text, or JSON rows ("records": objects, "lists": positional lists)."""

    # A plain class, not a dataclass: dataclasses look their module up in sys.modules, and a script
    # loaded from a file path (as some servers and tests do) need not be registered there.
    __slots__ = ("items", "kind", "text")

    def __init__(self, kind: str, *, text: str = "", items: list[Any] | None = None) -> None:
        self.kind = kind
        self.text = text
        self.items: list[Any] = items if items is not None else []

    def frame(self, schema: Schema) -> pd.DataFrame:
        if self.kind == "csv":
            fast = _fast_csv_frame(self.text, schema) if len(self.text) >= _FAST_CSV_MIN_CHARS else None
            return fast if fast is not None else _csv_frame(self.text, schema)
        return _json_frame(self.items, self.kind, schema)


def _typed_frame(schema: Schema, columns: dict[str, np.ndarray]) -> pd.DataFrame:
    """Numeric columns float64, the others object (str or NaN), in the fitted order.

    A dict in that order and an explicit index: pandas then skips reindexing (a `columns=` argument costs
    three times as much for small requests) and still consolidates the columns into one block per type.
    """
    ordered = {name: columns[name] for name in schema.names}
    return pd.DataFrame(ordered, index=pd.RangeIndex(len(ordered[schema.names[0]])))


def _raise_first(problems: list[tuple[int, int, str]]) -> None:
    """The problem of the earliest row (then the leftmost feature), so every path reports the same one."""
    if problems:
        raise BadRequest(min(problems)[2])


def _rows_without_values(columns: Iterable[np.ndarray]) -> np.ndarray:
    """Mask of the rows in which every one of `columns` is missing (NaN or None).

    Stops at the first column after which no row is left: usually the first, a column without gaps.
    """
    empty = np.empty(0, dtype=bool)
    for number, values in enumerate(columns):
        empty = pd.isna(values) if number == 0 else empty & pd.isna(values)
        if not empty.any():
            break
    return empty


def _check_some_value(columns: dict[str, np.ndarray], schema: Schema, where: Callable[[int], str]) -> None:
    empty = _rows_without_values(columns[name] for name in schema.names)
    if empty.any():
        index = int(np.flatnonzero(empty)[0])
        raise BadRequest(f"{where(index)} has no feature values, only empty fields; send at least one value "
                         "(missing ones are imputed) or leave the row out")


def _number_problem(name: str, place: str, shown: str, missing: str) -> str:
    return (f"feature {name!r} {place} is {shown}, not a number; send a decimal number such as 12.5, "
            f"or {missing} to have it imputed")


def _not_finite(name: str, place: str, shown: str, missing: str) -> str:
    return (f"feature {name!r} {place} is {shown}, which is not a finite number (a 64-bit float cannot hold it); "
            f"send a finite number, or {missing} to have it imputed")


def _numbers_from_text(cells: Sequence[str], name: str, where: Callable[[int], str],
                       missing: str) -> tuple[np.ndarray, tuple[int, str] | None]:
    """Stripped text cells -> float64 by pandas' own parser (what this endpoint has always used), and the
    first cell that is not a finite number or missing (its index and the message), if any."""
    if max(map(len, cells)) <= _PLAIN_NUMBER_CHARS and _PLAIN_NUMBER.fullmatch("".join(cells)):
        # Plain decimals of up to 15 characters (so at most 15 digits, no exponent): Python's float()
        # gives exactly pandas' value for them -- both round once, exactly -- at a fraction of the cost.
        try:
            return np.array([float(cell) for cell in cells], dtype=np.float64), None
        except ValueError:
            pass  # an empty cell or a lone sign or dot: pandas' path says which
    values = np.asarray(pd.to_numeric(np.asarray(cells, dtype=object), errors="coerce"), dtype=np.float64)
    for index in np.flatnonzero(~np.isfinite(values)).tolist():
        cell = cells[int(index)]
        if np.isnan(values[index]):
            if cell.lower() in _MISSING_TEXT:
                continue
            if not _DECIMAL.fullmatch(cell):
                return values, (index, _number_problem(name, where(index), _cut(repr(cell)), missing))
            # A well-formed number pandas could not hold (1e999): beyond a 64-bit float.
        return values, (index, _not_finite(name, where(index), _cut(repr(cell)), missing))
    return values, None


def _categories_from_text(cells: Sequence[str]) -> np.ndarray:
    return np.array([np.nan if cell.lower() in _MISSING_TEXT else cell for cell in cells], dtype=object)


# --- CSV ----------------------------------------------------------------------------------------------------
def _header_columns(cells: Sequence[str], schema: Schema, line: int) -> list[int] | None:
    """Positions of the features when `cells` is a header row (it names one of them), else None."""
    lowered = [cell.strip().lower() for cell in cells]
    wanted = [name.lower() for name in schema.names]
    if not set(wanted) & set(lowered):
        return None
    absent = [name for name, low in zip(schema.names, wanted, strict=True) if low not in lowered]
    if absent:
        raise BadRequest(f"CSV header (line {line}) lacks features {absent}; name every feature: {schema.order()}")
    twice = [name for name, low in zip(schema.names, wanted, strict=True) if lowered.count(low) > 1]
    if twice:
        raise BadRequest(f"CSV header (line {line}) names features {twice} more than once; name each once")
    return [lowered.index(low) for low in wanted]


def _csv_layout(first: Sequence[str], schema: Schema, line: int) -> tuple[list[int], int, bool]:
    """(position of each feature, fields per row, whether `first` is a header row) for a CSV body."""
    positions = _header_columns(first, schema, line)
    if positions is not None:
        return positions, len(first), True
    return list(range(len(schema.names))), len(schema.names), False


def _csv_frame(text: str, schema: Schema) -> pd.DataFrame:
    """The validating path: every line and cell checked, every problem named with its line."""
    reader = csv.reader(io.StringIO(text))
    # Cells are trimmed; when the body holds no whitespace but line breaks (and no quotes, which could
    # hold some), there is nothing to trim and the per-cell work is skipped.
    trim = '"' in text or _INNER_SPACE.search(text) is not None
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if len(row) <= 1 and not "".join(row).strip():
                continue  # a blank line is no row
            rows.append([cell.strip() for cell in row] if trim else row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV on line {reader.line_num}: {exc}; quote fields that hold commas, "
                         "quotes or line breaks") from None
    if not rows:
        raise BadRequest("CSV has no data rows")
    positions, width, has_header = _csv_layout(rows[0], schema, lines[0])
    if has_header:
        del rows[0], lines[0]
        if not rows:
            raise BadRequest("CSV has a header row but no data rows")
    if any(len(row) != width for row in rows):
        index = next(i for i, row in enumerate(rows) if len(row) != width)
        expected = (f"the header has {width}" if has_header
                    else f"expected {width}, in this order: {schema.order()}")
        raise BadRequest(f"CSV line {lines[index]} has {len(rows[index])} fields; {expected}")
    by_position = list(zip(*rows, strict=True))

    def where(index: int) -> str:
        return f"on CSV line {lines[index]}"

    problems: list[tuple[int, int, str]] = []
    columns: dict[str, np.ndarray] = {}
    for column, (name, position) in enumerate(zip(schema.names, positions, strict=True)):
        cells = by_position[position]
        if name in schema.numeric:
            columns[name], problem = _numbers_from_text(cells, name, where, "an empty field")
            if problem is not None:
                problems.append((problem[0], column, problem[1]))
        else:
            columns[name] = _categories_from_text(cells)
    _raise_first(problems)
    _check_some_value(columns, schema, lambda index: f"CSV line {lines[index]}")
    return _typed_frame(schema, columns)


def _fast_csv_frame(text: str, schema: Schema) -> pd.DataFrame | None:
    """pandas' C reader for plain, well-formed CSV; None sends the request to the validating path.

    Only bodies without quotes, spaces or tabs qualify (the two paths trim and split those differently).
    pandas infers each column's type: a numeric feature must come back as integers or floats (a column of
    True/False comes back boolean, anything not a number as text), a categorical one as text; values it
    takes differently from the validating path (inf, other spellings of nan, untrimmed text, rows of
    empty fields) are looked for afterwards.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if any(mark in text for mark in ('"', " ", "\t", "\r", "\x00")):
        return None
    first_end = text.find("\n")
    first = text[:first_end] if first_end >= 0 else text
    if not first:
        return None
    positions, width, has_header = _csv_layout(first.split(","), schema, 1)
    data = (text[first_end + 1:] if has_header else text).encode()
    # A first reading that looks for no missing values (a tenth faster); when what it declines is a column
    # holding some ("" or nan: a numeric column comes back as text), the body is read again, looking for them.
    parsed = _read_csv(data, width, na_filter=False)
    decline = _decline(parsed, schema, positions)
    if decline == _MISSING_VALUES:
        parsed = _read_csv(data, width, keep_default_na=False, na_values=list(_READER_MISSING))
        decline = _decline(parsed, schema, positions)
    if parsed is None or decline is not None:
        return None
    if _rows_without_values(parsed[position].to_numpy() for position in positions).any():
        return None  # a row of empty fields: the validating path refuses it, naming the line
    frame = parsed if positions == list(range(width)) else parsed.loc[:, positions]
    frame.columns = pd.Index(schema.names)
    return frame


def _read_csv(data: bytes, width: int, **missing: Any) -> pd.DataFrame | None:
    """`data` by pandas' C reader, or None when it fails or a row has other than `width` fields."""
    try:
        # No usecols: with it pandas drops a row's surplus fields silently; without, such a row fails.
        parsed = pd.read_csv(io.BytesIO(data), header=None, names=list(range(width)), engine="c",
                             quoting=csv.QUOTE_NONE, skip_blank_lines=True, index_col=False, low_memory=False,
                             **missing)
    except (ValueError, OverflowError, pd.errors.ParserError):
        return None
    rows = len(parsed)
    # A row with too many fields fails the reader; one with too few would be padded with NaN: with every
    # row at most `width` fields, the comma count shows whether all of them have exactly `width`.
    if rows == 0 or data.count(b",") != rows * (width - 1):
        return None
    return parsed


_MISSING_VALUES = "missing values"
_OTHER = "other"
# What the second reading takes as a missing value; other spellings of nan stay text and are declined.
_READER_MISSING = frozenset(("", "nan", "NaN", "NAN"))


def _decline(parsed: pd.DataFrame | None, schema: Schema, positions: list[int]) -> str | None:
    """None when every column is what the validating path would make of it; else why not, for the first column
    that is not: _MISSING_VALUES when it holds text that is a missing value ("" or nan), _OTHER for a reading
    that failed, numbers that are not finite or not numbers, and text that is untrimmed."""
    if parsed is None:
        return _OTHER
    for name, position in zip(schema.names, positions, strict=True):
        values = parsed[position].to_numpy()
        kind = values.dtype.kind
        if name in schema.numeric:
            # Integer columns stay int64: the model converts them to float64 exactly as the validating
            # path does, so the predictions are the same without a copy of the frame.
            if (kind == "f" and np.isinf(values).any()) or kind not in "fiuO":
                return _OTHER  # not finite, or booleans
            if kind == "O":
                return _OTHER if _READER_MISSING.isdisjoint(values.tolist()) else _MISSING_VALUES
            continue
        if kind != "O":
            return _OTHER  # numbers or booleans in a categorical column
        texts = set(values.tolist())
        if any(not isinstance(v, str) or v != v.strip() for v in texts if v == v):
            return _OTHER  # untrimmed text (v != v: NaN)
        if any(isinstance(v, str) and v.lower() in _MISSING_TEXT for v in texts):
            return _MISSING_VALUES
    return None


# --- JSON ---------------------------------------------------------------------------------------------------
def _json_frame(items: list[Any], kind: str, schema: Schema) -> pd.DataFrame:
    names = schema.names
    if kind == "records":
        try:
            getter = operator.itemgetter(*names)
            by_position = list(zip(*map(getter, items), strict=True)) if len(names) > 1 else [
                tuple(map(getter, items))]
        except KeyError:
            for index, item in enumerate(items, start=1):
                missing = [name for name in names if name not in item]
                if missing:
                    raise BadRequest(f"JSON row {index} is missing features {missing}; every row needs: "
                                     f"{schema.order()}") from None
            raise
    else:
        for index, item in enumerate(items, start=1):
            if len(item) != len(names):
                raise BadRequest(f"JSON row {index} has {len(item)} values; expected {len(names)} in this order: "
                                 f"{schema.order()}")
        by_position = list(zip(*items, strict=True))

    def where(index: int) -> str:
        return f"in JSON row {index + 1}"

    problems: list[tuple[int, int, str]] = []
    columns: dict[str, np.ndarray] = {}
    for column, (name, values) in enumerate(zip(names, by_position, strict=True)):
        if name in schema.numeric:
            columns[name] = _json_numbers(values, name, where, problems, column)
        else:
            columns[name] = _json_categories(values, name, where, problems, column)
    _raise_first(problems)
    _check_some_value(columns, schema, lambda index: f"JSON row {index + 1}")
    return _typed_frame(schema, columns)


def _json_numbers(values: Sequence[Any], name: str, where: Callable[[int], str],
                  problems: list[tuple[int, int, str]], column: int) -> np.ndarray:
    if set(map(type, values)) <= {float, int}:
        try:
            numbers = np.array(values, dtype=np.float64)
        except OverflowError:
            numbers = None
        if numbers is not None and not np.isinf(numbers).any():
            return numbers
    numbers = np.full(len(values), np.nan)
    texts: list[str] = []
    text_rows: list[int] = []
    for index, value in enumerate(values):
        kind = type(value)
        if value is None:
            continue
        if kind is bool:
            problems.append((index, column, f"feature {name!r} {where(index)} is {_shown(value)}, a boolean; "
                                            "send a number: 1 for true, 0 for false"))
            break
        if kind in (dict, list):
            problems.append((index, column, _number_problem(name, where(index), _json_kind(value), "null")))
            break
        if kind is str:
            texts.append(value.strip())
            text_rows.append(index)
            continue
        try:
            number = float(value)
        except OverflowError:
            number = float("inf")
        if np.isinf(number):
            problems.append((index, column, _not_finite(name, where(index), _shown(value), "null")))
            break
        numbers[index] = number
    if texts:
        parsed, problem = _numbers_from_text(texts, name, lambda i: where(text_rows[i]), "null")
        if problem is not None:
            problems.append((text_rows[problem[0]], column, problem[1]))
        numbers[text_rows] = parsed
    return numbers


def _json_categories(values: Sequence[Any], name: str, where: Callable[[int], str],
                     problems: list[tuple[int, int, str]], column: int) -> np.ndarray:
    if set(map(type, values)) == {str}:
        categories = np.array(values, dtype=object)
        if not any(v.lower() in _MISSING_TEXT for v in set(values)):
            return categories
    result = np.empty(len(values), dtype=object)
    for index, value in enumerate(values):
        kind = type(value)
        if value is None or (kind is float and value != value):
            result[index] = np.nan
        elif kind is str:
            result[index] = np.nan if value.lower() in _MISSING_TEXT else value
        elif kind in (bool, dict, list):
            problems.append((index, column, f"feature {name!r} {where(index)} is {_json_kind(value)}; send text "
                                            "(one of the categories the model was trained on), or null to have "
                                            "it imputed"))
            break
        else:
            result[index] = str(value)
    return result


# --- Answers ------------------------------------------------------------------------------------------------
def _micro_units(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(round(p, 6) * 10**6 as integers, rows whose rounding numpy may get wrong), or None for Python's path.

    p * 1e6 is within 2e-10 of the exact product for p in [0, 1], so away from a tie (x.5) rint rounds it as
    Python's correctly rounded formatting does; the rare rows near a tie are formatted by Python.
    """
    if probabilities.size < _FAST_ANSWER_MIN_ROWS or not ((probabilities >= 0) & (probabilities <= 1)).all():
        return None
    scaled = probabilities * 1e6
    near_tie = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    return np.rint(scaled).astype(np.int64), near_tie


_DIGIT_PLACES = 10 ** np.arange(5, -1, -1, dtype=np.int64)


def _digits(micro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(units digit, six fraction digits) as ASCII codes."""
    units = (micro // 1_000_000).astype(np.uint8) + ord("0")
    fraction = ((micro % 1_000_000)[:, None] // _DIGIT_PLACES % 10).astype(np.uint8) + ord("0")
    return units, fraction


def _csv_line(probability: float, label: bool) -> str:
    return f"{probability:.6f},{int(label)}\n"


def _csv_answer(probabilities: np.ndarray) -> str:
    labels = probabilities >= THRESHOLD
    rounded = _micro_units(probabilities)
    if rounded is None:
        return "".join(_csv_line(p, label) for p, label in zip(probabilities.tolist(), labels.tolist(), strict=True))
    micro, by_python = rounded
    units, fraction = _digits(micro)
    lines = np.empty((probabilities.size, 11), dtype=np.uint8)  # "0.123456,1\n"
    lines[:, 0] = units
    lines[:, 1] = ord(".")
    lines[:, 2:8] = fraction
    lines[:, 8] = ord(",")
    lines[:, 9] = labels.astype(np.uint8) + ord("0")
    lines[:, 10] = ord("\n")
    for index in np.flatnonzero(by_python).tolist():
        lines[index] = np.frombuffer(_csv_line(float(probabilities[index]), bool(labels[index])).encode(), np.uint8)
    return lines.tobytes().decode("ascii")


_JSON_HEAD = b'{"churn_probability": '
_JSON_MIDDLE = b', "churn": '
_JSON_TAIL = b"}, "


def _json_item(probability: float, label: bool) -> str:
    return json.dumps({"churn_probability": round(probability, 6), _TARGET_COLUMN: int(label)})


def _number_field(micro: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """repr(round(p, 6)) as 8 ASCII codes per row and the mask of those that are written.

    From 1e-4 up: '0.5', '0.123456', '1.0' (trailing zeros dropped, one digit kept). Below it Python uses
    exponent notation: '5e-06', '1.2e-05', '1e-05'.
    """
    units, fraction = _digits(micro)
    field = np.empty((micro.size, 8), dtype=np.uint8)
    field[:, 0] = units
    field[:, 1] = ord(".")
    field[:, 2:] = fraction
    remainder = micro % 1_000_000
    trailing_zeros = sum((remainder % 10 ** k == 0).astype(np.int64) for k in range(1, 7))
    keep = np.ones(field.shape, dtype=bool)
    keep[:, 2:] = np.arange(1, 7) <= np.maximum(6 - trailing_zeros, 1)[:, None]
    tiny = np.flatnonzero((micro > 0) & (micro < 100))
    if tiny.size:
        small = micro[tiny]
        first = np.where(small < 10, small, small // 10)
        second = np.where(small < 10, 0, small % 10)
        field[tiny] = np.column_stack([
            first + ord("0"), np.full(tiny.size, ord(".")), second + ord("0"), np.full(tiny.size, ord("e")),
            np.full(tiny.size, ord("-")), np.full(tiny.size, ord("0")), np.where(small < 10, ord("6"), ord("5")),
            np.full(tiny.size, ord(" "))]).astype(np.uint8)
        keep[tiny] = True
        keep[tiny, 1] = keep[tiny, 2] = second != 0
        keep[tiny, 7] = False
    return field, keep


def _json_answer(probabilities: np.ndarray) -> str:
    labels = probabilities >= THRESHOLD
    rounded = _micro_units(probabilities)
    if rounded is None:
        items = ", ".join(_json_item(p, label) for p, label in zip(probabilities.tolist(), labels.tolist(),
                                                                      strict=True))
        return '{"predictions": [' + items + "]}"
    micro, by_python = rounded
    number, number_keep = _number_field(micro)
    head, middle, tail = len(_JSON_HEAD), len(_JSON_MIDDLE), len(_JSON_TAIL)
    rows = np.empty((probabilities.size, head + 8 + middle + 1 + tail), dtype=np.uint8)
    rows[:, :head] = np.frombuffer(_JSON_HEAD, dtype=np.uint8)
    rows[:, head:head + 8] = number
    rows[:, head + 8:head + 8 + middle] = np.frombuffer(_JSON_MIDDLE, dtype=np.uint8)
    rows[:, head + 8 + middle] = labels.astype(np.uint8) + ord("0")
    rows[:, head + 9 + middle:] = np.frombuffer(_JSON_TAIL, dtype=np.uint8)
    keep = np.ones(rows.shape, dtype=bool)
    keep[:, head:head + 8] = number_keep
    flat = rows[keep].tobytes().decode("ascii")
    exceptions = np.flatnonzero(by_python).tolist()
    if exceptions:
        ends = np.cumsum(keep.sum(axis=1)).tolist()
        pieces, done = [], 0
        for index in exceptions:
            start = ends[index - 1] if index else 0
            pieces += [flat[done:start], _json_item(float(probabilities[index]), bool(labels[index])), ", "]
            done = ends[index]
        flat = "".join([*pieces, flat[done:]])
    return '{"predictions": [' + flat[:-2] + "]}"
