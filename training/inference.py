"""Serving code for the churn model: the four functions the SageMaker scikit-learn container calls.

Shipped inside model.tar.gz as code/inference.py and run by the container (SAGEMAKER_PROGRAM), so it
imports only the standard library, numpy, pandas, scikit-learn and joblib — never `contracts` or
`training`, which are not in the image.

Requests: `text/csv` (rows of features, with or without a header row) or `application/json` (a list
of objects, or {"instances": [...]} whose items are objects or positional lists).
Responses: `application/json` -> {"predictions": [{"churn_probability": p, "churn": 0|1}, ...]};
`text/csv` -> one "p,label" line per row.
Bad requests raise an InferenceError subclass whose `.status` is the HTTP status a model server
should answer with (400, 406, 415) and whose message says what to send instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

import joblib
import numpy as np
import pandas as pd

MODEL_FILE = "model.joblib"
CSV = "text/csv"
JSON = "application/json"
SUPPORTED = (CSV, JSON)
# Same value as training.train.LABEL_THRESHOLD, so the endpoint labels as the evaluation did.
THRESHOLD = 0.5
# Names train.py gives its pipeline steps; the round-trip tests keep both files in step.
_PREPROCESS_STEP = "preprocess"
_NUMERIC_TRANSFORMER = "numeric"
_TARGET_COLUMN = "churn"


class InferenceError(Exception):
    """A request the model cannot answer; `.status` is the HTTP status to reply with."""

    status = 400


class BadRequest(InferenceError):
    status = 400


class UnsupportedContentType(InferenceError):
    status = 415


class UnsupportedAccept(InferenceError):
    status = 406


def _media_type(value: str | None, default: str) -> str:
    """'text/csv; charset=utf-8' -> 'text/csv'; empty or '*/*' -> default."""
    media = (value or "").split(";", 1)[0].strip().lower()
    return default if media in ("", "*/*") else media


def model_fn(model_dir: str) -> Any:
    path = os.path.join(model_dir, MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{MODEL_FILE} not found in {model_dir}; the model archive must contain it at its root")
    return joblib.load(path)


def input_fn(request_body: str | bytes, request_content_type: str | None) -> dict[str, Any]:
    """Parse the request into rows; the model's own column names are applied in predict_fn."""
    content_type = _media_type(request_content_type, CSV)
    if content_type not in SUPPORTED:
        raise UnsupportedContentType(
            f"content type {request_content_type!r} is not supported; send {' or '.join(SUPPORTED)}"
        )
    if isinstance(request_body, (bytes, bytearray)):
        try:
            text = bytes(request_body).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("request body is not UTF-8 text") from None
    else:
        text = request_body
    if not text.strip():
        raise BadRequest("request body is empty; send at least one row of features")
    return _parse_csv(text) if content_type == CSV else _parse_json(text)


def _parse_csv(text: str) -> dict[str, Any]:
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in row)]
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from None
    return {"kind": "csv", "rows": [[cell.strip() for cell in row] for row in rows]}


def _parse_json(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if isinstance(payload, dict):
        if "instances" not in payload:
            raise BadRequest('JSON object must have an "instances" list; or send a list of objects')
        payload = payload["instances"]
    if not isinstance(payload, list) or not payload:
        raise BadRequest("JSON must be a non-empty list of rows (objects of feature values, or lists in column order)")
    if all(isinstance(item, dict) for item in payload):
        return {"kind": "records", "rows": payload}
    if all(isinstance(item, list) for item in payload):
        return {"kind": "lists", "rows": payload}
    raise BadRequest("every JSON row must be an object (feature -> value) or every row a list, not a mix")


def _feature_names(model: Any) -> list[str]:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise TypeError("model was not fitted on a table with column names; retrain it with training/train.py")
    return [str(n) for n in names]


def _numeric_columns(model: Any, names: list[str]) -> set[str]:
    """Numeric columns as the pipeline declared them, so CSV text is converted the way it was trained."""
    steps = getattr(model, "named_steps", {})
    preprocess = steps.get(_PREPROCESS_STEP) if hasattr(steps, "get") else None
    for name, _transformer, columns in getattr(preprocess, "transformers_", []):
        if name == _NUMERIC_TRANSFORMER:
            return {str(c) for c in columns}
    return set(names)


def _frame(data: dict[str, Any], names: list[str]) -> pd.DataFrame:
    rows = data["rows"]
    if data["kind"] == "records":
        missing = sorted({n for n in names if any(n not in row for row in rows)})
        if missing:
            raise BadRequest(f"rows are missing features {missing}; every row needs: {', '.join(names)}")
        return pd.DataFrame([[row[n] for n in names] for row in rows], columns=pd.Index(names))
    if data["kind"] == "csv":
        header = [cell.lower() for cell in rows[0]]
        wanted = {n.lower() for n in names}
        if wanted & set(header) and not wanted <= set(header):
            absent = [n for n in names if n.lower() not in header]
            raise BadRequest(f"CSV header lacks features {absent}; expected columns: {', '.join(names)}")
        if wanted <= set(header):
            # A header row: take columns by name, which also drops extras such as the label.
            index = [header.index(n.lower()) for n in names]
            body = rows[1:]
            if not body:
                raise BadRequest("CSV has a header row but no data rows")
            short = [i + 2 for i, row in enumerate(body) if len(row) != len(header)]
            if short:
                raise BadRequest(f"CSV rows {short[:5]} do not have the header's {len(header)} fields")
            return pd.DataFrame([[row[i] for i in index] for row in body], columns=pd.Index(names))
    bad = [i + 1 for i, row in enumerate(rows) if len(row) != len(names)]
    if bad:
        raise BadRequest(
            f"rows {bad[:5]} have the wrong number of values: expected {len(names)} in this order: {', '.join(names)}"
        )
    return pd.DataFrame(rows, columns=pd.Index(names))


def predict_fn(input_data: dict[str, Any], model: Any) -> np.ndarray:
    """Churn probability per row."""
    names = _feature_names(model)
    frame = _frame(input_data, names)
    numeric = _numeric_columns(model, names)
    for column in names:
        if column in numeric:
            values = frame[column].map(lambda v: None if isinstance(v, str) and not v.strip() else v)
            try:
                converted = pd.Series(pd.to_numeric(values, errors="coerce"), index=values.index, dtype=float)
            except TypeError:
                raise BadRequest(f"feature {column!r} must be a number in every row") from None
            invalid = converted.isna() & values.notna()
            if invalid.any():
                first = values.loc[invalid].tolist()[0]
                raise BadRequest(f"feature {column!r} must be a number, got {first!r}")
            frame[column] = converted
        else:
            frame[column] = frame[column].map(lambda v: np.nan if v is None or v == "" else str(v)).astype(object)
    return model.predict_proba(frame)[:, 1]


def output_fn(prediction: Any, accept: str | None) -> tuple[str, str]:
    """(body, content type): the scikit-learn container turns a tuple into the HTTP response."""
    media = _media_type(accept, JSON)
    if media not in SUPPORTED:
        raise UnsupportedAccept(f"accept type {accept!r} is not supported; ask for {' or '.join(SUPPORTED)}")
    probabilities = [float(p) for p in np.asarray(prediction, dtype=float).ravel()]
    labels = [int(p >= THRESHOLD) for p in probabilities]
    if media == JSON:
        predictions = [{"churn_probability": round(p, 6), _TARGET_COLUMN: label}
                       for p, label in zip(probabilities, labels, strict=True)]
        body = json.dumps({"predictions": predictions})
        return body, JSON
    return "".join(f"{p:.6f},{label}\n" for p, label in zip(probabilities, labels, strict=True)), CSV
