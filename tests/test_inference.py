"""training/inference.py, loaded from the model archive the way the scikit-learn container loads it."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import parse_source

import contracts
from training.register import INFERENCE_SOURCE, build_model_archive
from training.train import make_dataset

CONTAINER_LIBRARIES = {"numpy", "pandas", "sklearn", "joblib"}


@pytest.fixture(scope="module")
def served(trained_model_dir: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, Any]:
    """(inference module from code/inference.py, model from model_fn), both out of an unpacked model.tar.gz."""
    scratch = tmp_path_factory.mktemp("archive")
    archive = build_model_archive(trained_model_dir[0], scratch)
    unpacked = scratch / "opt-ml-model"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    spec = importlib.util.spec_from_file_location("served_inference", unpacked / "code" / contracts.INFERENCE_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, module.model_fn(str(unpacked))


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return make_dataset(6, 2024)


def _invoke(served: tuple[ModuleType, Any], body: str | bytes, content_type: str, accept: str) -> tuple[str, str]:
    module, model = served
    return module.output_fn(module.predict_fn(module.input_fn(body, content_type), model), accept)


def _expected(served: tuple[ModuleType, Any], rows: pd.DataFrame) -> np.ndarray:
    return served[1].predict_proba(rows.drop(columns=[contracts.TARGET_COLUMN]))[:, 1]


def _csv_probabilities(body: str) -> list[float]:
    return [float(line.split(",")[0]) for line in body.splitlines()]


def test_inference_imports_only_what_the_scikit_learn_image_has() -> None:
    tree = parse_source(INFERENCE_SOURCE.read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    foreign = imported - CONTAINER_LIBRARIES - set(sys.stdlib_module_names)
    assert not foreign, f"inference.py imports {foreign}, which the serving container does not have"


def test_csv_with_header_row_predicts_what_the_model_predicts(served, rows: pd.DataFrame) -> None:
    # The header names the label column too: it is ignored, as columns are taken by name.
    payload = rows.to_csv(index=False)
    assert payload is not None
    body, content_type = _invoke(served, payload, "text/csv", "text/csv")
    assert content_type == "text/csv"
    assert _csv_probabilities(body) == pytest.approx(_expected(served, rows), abs=1e-6)


def test_csv_without_header_predicts_what_the_model_predicts(served, rows: pd.DataFrame) -> None:
    features = rows.drop(columns=[contracts.TARGET_COLUMN])
    payload = features.to_csv(index=False, header=False)
    assert payload is not None
    body, _ = _invoke(served, payload.encode(), "text/csv", "text/csv")
    assert _csv_probabilities(body) == pytest.approx(_expected(served, rows), abs=1e-6)


def test_json_list_of_objects_predicts_what_the_model_predicts(served, rows: pd.DataFrame) -> None:
    payload = rows.drop(columns=[contracts.TARGET_COLUMN]).to_json(orient="records")
    assert payload is not None
    body, content_type = _invoke(served, payload, "application/json", "application/json")
    predictions = json.loads(body)["predictions"]
    assert content_type == "application/json"
    assert [p["churn_probability"] for p in predictions] == pytest.approx(_expected(served, rows), abs=1e-6)


def test_json_instances_of_lists_predict_what_the_model_predicts(served, rows: pd.DataFrame) -> None:
    payload = json.dumps({"instances": rows.drop(columns=[contracts.TARGET_COLUMN]).values.tolist()})
    body, _ = _invoke(served, payload, "application/json; charset=utf-8", "application/json")
    probabilities = [p["churn_probability"] for p in json.loads(body)["predictions"]]
    assert probabilities == pytest.approx(_expected(served, rows), abs=1e-6)


def test_label_is_one_exactly_when_probability_reaches_one_half(served) -> None:
    module, _ = served
    csv_body, _ = module.output_fn(np.array([0.2, 0.5, 0.93]), "text/csv")
    json_body, _ = module.output_fn(np.array([0.2, 0.5, 0.93]), "application/json")
    assert csv_body == "0.200000,0\n0.500000,1\n0.930000,1\n"
    assert [p["churn"] for p in json.loads(json_body)["predictions"]] == [0, 1, 1]


def test_any_accept_answers_json(served) -> None:
    _, content_type = served[0].output_fn(np.array([0.4]), "*/*")
    assert content_type == "application/json"


def test_missing_values_are_imputed_not_rejected(served, rows: pd.DataFrame) -> None:
    record = rows.drop(columns=[contracts.TARGET_COLUMN]).iloc[0].to_dict()
    record["support_calls"] = None
    record["payment_method"] = None
    body, _ = _invoke(served, json.dumps([record]), "application/json", "application/json")
    assert 0.0 <= json.loads(body)["predictions"][0]["churn_probability"] <= 1.0


def test_unsupported_content_type_is_a_415_naming_the_supported_ones(served) -> None:
    module, _ = served
    with pytest.raises(module.UnsupportedContentType, match="send text/csv or application/json") as raised:
        module.input_fn("<rows/>", "application/xml")
    assert raised.value.status == 415


def test_unsupported_accept_is_a_406(served) -> None:
    module, _ = served
    with pytest.raises(module.UnsupportedAccept) as raised:
        module.output_fn(np.array([0.1]), "application/x-protobuf")
    assert raised.value.status == 406


def test_malformed_json_is_a_400_saying_where(served) -> None:
    module, _ = served
    with pytest.raises(module.BadRequest, match=r"malformed JSON.*line 1 column") as raised:
        module.input_fn('[{"tenure_months": 3,', "application/json")
    assert raised.value.status == 400


def test_json_object_without_instances_is_a_400(served) -> None:
    module, _ = served
    with pytest.raises(module.BadRequest, match='"instances"'):
        module.input_fn('{"rows": []}', "application/json")


def test_missing_features_are_a_400_naming_them(served, rows: pd.DataFrame) -> None:
    record = rows.drop(columns=[contracts.TARGET_COLUMN, "tenure_months"]).iloc[0].to_dict()
    with pytest.raises(served[0].BadRequest, match=r"missing features \['tenure_months'\]"):
        _invoke(served, json.dumps([record]), "application/json", "application/json")


def test_non_numeric_value_for_a_numeric_feature_is_a_400_naming_feature_row_and_fix(served,
                                                                                     rows: pd.DataFrame) -> None:
    records = rows.drop(columns=[contracts.TARGET_COLUMN]).to_dict(orient="records")
    records[2]["monthly_charges"] = "a lot"
    with pytest.raises(served[0].BadRequest, match=r"'monthly_charges' in JSON row 3 is 'a lot', not a number; "
                                                   r"send a decimal number such as 12\.5, or null"):
        _invoke(served, json.dumps(records), "application/json", "application/json")


def test_csv_row_with_wrong_field_count_is_a_400_listing_the_columns(served) -> None:
    with pytest.raises(served[0].BadRequest, match="CSV line 1 has 3 fields; expected 10, in this order: "
                                                   "tenure_months, monthly_charges"):
        _invoke(served, "12,70.5,840\n", "text/csv", "text/csv")


def test_csv_header_lacking_a_feature_is_a_400_naming_it(served, rows: pd.DataFrame) -> None:
    payload = rows.drop(columns=["support_calls"]).to_csv(index=False)
    assert payload is not None
    with pytest.raises(served[0].BadRequest, match=r"CSV header \(line 1\) lacks features \['support_calls'\]"):
        _invoke(served, payload, "text/csv", "text/csv")


def test_csv_header_is_matched_regardless_of_case(served, rows: pd.DataFrame) -> None:
    payload = rows.rename(columns=str.upper).to_csv(index=False)
    assert payload is not None
    body, _ = _invoke(served, payload, "text/csv", "text/csv")
    assert _csv_probabilities(body) == pytest.approx(_expected(served, rows), abs=1e-6)


def test_empty_body_is_a_400(served) -> None:
    with pytest.raises(served[0].BadRequest, match="empty"):
        served[0].input_fn(b"  \n", "text/csv")


def test_model_fn_without_model_file_names_it(served, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.joblib not found"):
        served[0].model_fn(str(tmp_path))


# --- Identical predictions: a fixed set of rows, every request form, byte for byte -------------------------
def _fixed_rows() -> pd.DataFrame:
    """Typical rows plus rows with missing values, as a correctly typed frame (floats, text, NaN)."""
    frame = make_dataset(40, 2025).drop(columns=[contracts.TARGET_COLUMN]).astype(
        {"tenure_months": float, "support_calls": float, "paperless_billing": float, "senior_citizen": float,
         "has_partner": float})
    frame.loc[3, "monthly_charges"] = np.nan
    frame.loc[7, "payment_method"] = np.nan
    frame.loc[11, ["total_charges", "contract_type", "support_calls"]] = np.nan
    return frame


def _fixed_requests(frame: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """(body, content type) per request form, all carrying the same rows."""
    names = list(frame.columns)

    def cell(value: Any) -> str:
        return "" if isinstance(value, float) and np.isnan(value) else str(value)

    def csv_lines(columns: list[str]) -> list[str]:
        return [",".join(cell(row[c]) for c in columns) for _, row in frame.iterrows()]

    def json_value(value: Any) -> Any:
        return None if isinstance(value, float) and np.isnan(value) else value

    records = [{n: json_value(row[n]) for n in names} for _, row in frame.iterrows()]
    shuffled = names[::-1]
    return {
        "csv with header": ("\n".join([",".join(names), *csv_lines(names)]) + "\n", "text/csv"),
        "csv without header": ("\n".join(csv_lines(names)) + "\n", "text/csv"),
        "csv, header reordered, upper case, label column": (
            "\n".join([",".join(c.upper() for c in shuffled) + ",churn",
                       *[line + ",0" for line in csv_lines(shuffled)]]) + "\n", "text/csv"),
        "json records": (json.dumps(records), "application/json"),
        "json instances of lists": (json.dumps({"instances": [[r[n] for n in names] for r in records]}),
                                    "application/json"),
        "json records with numbers as text": (
            json.dumps([{n: (str(v) if isinstance(v, float) else v) for n, v in r.items()} for r in records]),
            "application/json"),
        "csv with header, crlf": ("\r\n".join([",".join(names), *csv_lines(names)]) + "\r\n", "text/csv"),
    }


@pytest.mark.parametrize("form", ["csv with header", "csv without header",
                                  "csv, header reordered, upper case, label column", "json records",
                                  "json instances of lists", "json records with numbers as text",
                                  "csv with header, crlf"])
@pytest.mark.parametrize("accept", ["text/csv", "application/json"])
def test_answers_are_the_models_own_probabilities_byte_for_byte(served, form: str, accept: str) -> None:
    frame = _fixed_rows()
    body, content_type = _fixed_requests(frame)[form]
    probabilities = served[1].predict_proba(frame)[:, 1]
    labels = [int(p >= 0.5) for p in probabilities]
    if accept == "text/csv":
        expected = "".join(f"{p:.6f},{label}\n" for p, label in zip(probabilities, labels, strict=True))
    else:
        expected = json.dumps({"predictions": [{"churn_probability": round(float(p), 6), "churn": label}
                                               for p, label in zip(probabilities, labels, strict=True)]})

    answer, answer_type = _invoke(served, body, content_type, accept)

    assert answer_type == accept
    assert answer == expected


# --- The container's contract: what input_fn and output_fn are handed ------------------------------------------
def test_request_without_content_type_is_read_as_json_as_the_container_does(served, rows: pd.DataFrame) -> None:
    module, _ = served
    payload = rows.drop(columns=[contracts.TARGET_COLUMN]).to_json(orient="records")
    assert payload is not None

    assert module.input_fn(payload, None).kind == "records"
    with pytest.raises(module.BadRequest, match="looks like CSV rows: send Content-Type: text/csv"):
        module.input_fn("12,70.5,840\n", None)


def test_content_type_parameters_and_case_are_understood(served, rows: pd.DataFrame) -> None:
    payload = rows.to_csv(index=False)
    assert payload is not None

    body, _ = _invoke(served, payload.encode(), "Text/CSV; charset=UTF-8", "text/csv")

    assert _csv_probabilities(body) == pytest.approx(_expected(served, rows), abs=1e-6)


def test_a_declared_charset_decodes_the_body(served, rows: pd.DataFrame) -> None:
    changed = rows.assign(payment_method="chèque")
    payload = changed.to_csv(index=False)
    assert payload is not None

    as_latin1, _ = _invoke(served, payload.encode("latin-1"), "text/csv; charset=latin-1", "text/csv")
    as_utf8, _ = _invoke(served, payload.encode(), "text/csv; charset=utf-8", "text/csv")

    assert as_latin1 == as_utf8


@pytest.mark.parametrize("as_bytes", [True, False])
def test_a_utf8_byte_order_mark_is_ignored(served, rows: pd.DataFrame, as_bytes: bool) -> None:
    payload = rows.to_csv(index=False)
    assert payload is not None
    body: str | bytes = ("\ufeff" + payload).encode() if as_bytes else "\ufeff" + payload

    answer, _ = _invoke(served, body, "text/csv; charset=utf-8" if as_bytes else "text/csv", "text/csv")

    assert _csv_probabilities(answer) == pytest.approx(_expected(served, rows), abs=1e-6)


def test_text_the_container_could_not_decode_is_refused_as_not_utf8(served) -> None:
    # The toolkit decodes exactly text/csv with errors="replace": undecodable bytes arrive as U+FFFD.
    with pytest.raises(served[0].BadRequest, match="not valid UTF-8") as raised:
        served[0].input_fn("12,70.5,840,one-year,ch\ufffdque\n", "text/csv")
    assert raised.value.status == 400


def test_an_unknown_charset_is_a_415_naming_it(served) -> None:
    with pytest.raises(served[0].UnsupportedContentType, match="charset 'x-martian'") as raised:
        served[0].input_fn(b"1,2\n", "text/csv; charset=x-martian")
    assert raised.value.status == 415


def test_a_json_body_declared_as_csv_says_so(served, rows: pd.DataFrame) -> None:
    payload = rows.to_json(orient="records")
    assert payload is not None
    with pytest.raises(served[0].BadRequest, match="looks like JSON but Content-Type is 'text/csv'"):
        served[0].input_fn(payload, "text/csv")


@pytest.mark.parametrize(("accept", "answer"), [
    ("application/json, text/csv;q=0.5", "application/json"),
    ("text/csv;q=0.5, application/json", "application/json"),
    ("text/csv, application/json", "text/csv"),
    ("text/*", "text/csv"),
    ("application/*", "application/json"),
    ("*/*", "application/json"),
    ("*/*;q=0.8", "application/json"),
    ("application/json;q=0, */*", "text/csv"),
    ("image/png, text/csv;q=0.1", "text/csv"),
    ("TEXT/CSV; charset=UTF-8", "text/csv"),
    ("", "application/json"),
    (None, "application/json"),
])
def test_accept_is_negotiated_as_http_does(served, accept: str | None, answer: str) -> None:
    assert served[0].negotiate(accept) == answer
    assert served[0].output_fn(np.array([0.25]), accept)[1] == answer


@pytest.mark.parametrize(("accept", "message"), [
    ("application/xml", "names no type this model answers with"),
    ("text/csv;q=0, application/json;q=0", "names no type"),
    ("text/csv; charset=latin-1", "names no type"),
    ("text/csv;q=2", "q='2' is not a number from 0 to 1"),
])
def test_an_accept_naming_nothing_we_produce_is_a_406(served, accept: str, message: str) -> None:
    with pytest.raises(served[0].UnsupportedAccept, match=message) as raised:
        served[0].output_fn(np.array([0.25]), accept)
    assert raised.value.status == 406


def test_any_type_answers_with_sagemaker_default_invocations_accept(served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "text/csv")

    assert served[0].negotiate("*/*;q=0.5") == "text/csv"
    assert served[0].negotiate(None) == "text/csv"


# --- Missing values and rows without any --------------------------------------------------------------------
def test_nan_is_a_missing_value_alike_in_csv_and_json(served, rows: pd.DataFrame) -> None:
    features = rows.drop(columns=[contracts.TARGET_COLUMN]).head(1)
    expected = served[1].predict_proba(features.assign(monthly_charges=np.nan, payment_method=np.nan))[:, 1]
    line = ",".join(features.columns) + "\n{}\n"
    values = features.iloc[0].to_dict()

    def csv_row(charges: str, payment: str) -> str:
        cells = {**{k: str(v) for k, v in values.items()}, "monthly_charges": charges, "payment_method": payment}
        return line.format(",".join(cells[c] for c in features.columns))

    requests = [(csv_row("", ""), "text/csv"), (csv_row("nan", "NaN"), "text/csv"), (csv_row("NAN", "nan"), "text/csv"),
                (json.dumps([{**values, "monthly_charges": None, "payment_method": None}]), "application/json"),
                (json.dumps([{**values, "monthly_charges": float("nan"), "payment_method": float("nan")}]),
                 "application/json"),
                (json.dumps([{**values, "monthly_charges": "nan", "payment_method": "NaN"}]), "application/json")]
    for body, content_type in requests:
        answer, _ = _invoke(served, body, content_type, "text/csv")
        assert _csv_probabilities(answer) == pytest.approx(expected, abs=1e-6), (content_type, body)


def test_a_row_of_empty_fields_is_refused_not_skipped(served, rows: pd.DataFrame) -> None:
    # Skipping it would shift every later answer onto the wrong row.
    payload = rows.to_csv(index=False)
    assert payload is not None
    lines = payload.splitlines()
    with_empty_row = "\n".join([*lines[:3], ",,,,,,,,,,", *lines[3:]]) + "\n"

    with pytest.raises(served[0].BadRequest, match="CSV line 4 has no feature values"):
        _invoke(served, with_empty_row, "text/csv", "text/csv")
    with pytest.raises(served[0].BadRequest, match="JSON row 1 has no feature values"):
        _invoke(served, json.dumps({"instances": [[None] * 10]}), "application/json", "text/csv")


def test_the_earliest_bad_row_is_the_one_named(served, rows: pd.DataFrame) -> None:
    records = rows.drop(columns=[contracts.TARGET_COLUMN]).to_dict(orient="records")
    records[4]["tenure_months"] = "long"
    records[1]["support_calls"] = [1]

    with pytest.raises(served[0].BadRequest, match="'support_calls' in JSON row 2 is a list"):
        _invoke(served, json.dumps(records), "application/json", "text/csv")


# --- The fast paths give what the validating path gives -------------------------------------------------------
def _big_csv(count: int = 800, header: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """Rows enough for the C reader's path (over its size threshold), as a frame and as CSV lines."""
    frame = make_dataset(count, 99).drop(columns=[contracts.TARGET_COLUMN])
    lines = [",".join(map(str, row)) for row in frame.itertuples(index=False)]
    return frame, ([",".join(frame.columns)] if header else []) + lines


def test_large_well_formed_csv_takes_the_c_reader_and_predicts_what_the_validating_path_predicts(served) -> None:
    module, model = served
    frame, lines = _big_csv()
    text = "\n".join(lines) + "\n"
    schema = module._schema(model)
    assert len(text) >= module._FAST_CSV_MIN_CHARS

    fast = module._fast_csv_frame(text, schema)
    slow = module._csv_frame(text, schema)

    assert fast is not None
    assert list(fast.columns) == list(slow.columns) == list(frame.columns)
    assert (model.predict_proba(fast) == model.predict_proba(slow)).all()
    assert (model.predict_proba(slow) == model.predict_proba(frame)).all()


@pytest.mark.parametrize(("column", "value"), [("total_charges", ""), ("total_charges", "NaN"),
                                             ("contract_type", "nan"), ("contract_type", "")])
def test_large_csv_with_missing_values_takes_the_c_reader_and_predicts_what_the_validating_path_predicts(
        served, column: str, value: str) -> None:
    module, model = served
    frame, lines = _big_csv()
    position = list(frame.columns).index(column)
    for index in range(5, len(lines), 7):
        cells = lines[index].split(",")
        cells[position] = value
        lines[index] = ",".join(cells)
    text = "\n".join(lines) + "\n"
    schema = module._schema(model)

    fast = module._fast_csv_frame(text, schema)

    assert fast is not None
    assert (model.predict_proba(fast) == model.predict_proba(module._csv_frame(text, schema))).all()


# Each: (line 5's field -> value) changes to a large body; the C reader must decline or agree exactly.
UNUSUAL_CELLS = [
    ("total_charges", "inf"), ("total_charges", "-Infinity"), ("total_charges", "1e999"), ("total_charges", "1e-999"),
    ("total_charges", "nAn"), ("total_charges", "-nan"), ("total_charges", "+nan"), ("total_charges", "NaN"),
    ("total_charges", ""), ("total_charges", "1_000"), ("total_charges", "0x10"), ("total_charges", "1e5"),
    ("total_charges", "+.5"), ("total_charges", "5."), ("total_charges", "\x0b12"), ("total_charges", "12abc"),
    ("total_charges", "0.30000000000000004"), ("total_charges", "123456789012345678901234"),
    ("tenure_months", "True"), ("contract_type", "NaN"), ("contract_type", ""), ("contract_type", "\x0cone-year"),
    ("contract_type", "12"), ("contract_type", '"one-year"'), ("contract_type", "one year"),
    ("contract_type", "nAn"), ("contract_type", "null"), ("total_charges", "NA"), ("total_charges", "null"),
]


@pytest.mark.parametrize(("column", "value"), UNUSUAL_CELLS)
def test_the_c_reader_path_declines_or_agrees_with_the_validating_path(served, column: str, value: str) -> None:
    module, model = served
    frame, lines = _big_csv()
    position = list(frame.columns).index(column)
    cells = lines[5].split(",")
    cells[position] = value
    lines[5] = ",".join(cells)

    _agree_or_decline(module, model, "\n".join(lines) + "\n")


def _agree_or_decline(module: ModuleType, model: Any, text: str) -> None:
    schema = module._schema(model)
    try:
        expected = model.predict_proba(module._csv_frame(text, schema))
    except module.BadRequest as refused:
        with pytest.raises(module.BadRequest) as also_refused:
            module.Rows("csv", text=text).frame(schema)
        assert str(also_refused.value) == str(refused)
        return
    fast = module._fast_csv_frame(text, schema)
    assert fast is None or (model.predict_proba(fast) == expected).all()


UNUSUAL_LINES: dict[str, Callable[[list[str]], list[str]]] = {
    "a row one field short": lambda lines: [*lines[:5], lines[5].rsplit(",", 1)[0], *lines[6:]],
    "a row one field long": lambda lines: [*lines[:5], lines[5] + ",1", *lines[6:]],
    "one row short, another long": lambda lines: [*lines[:5], lines[5].rsplit(",", 1)[0], lines[6] + ",1",
                                                  *lines[7:]],
    "a blank line": lambda lines: [*lines[:5], "", *lines[5:]],
    "a line of commas": lambda lines: [*lines[:5], "," * 9, *lines[5:]],
    "a leading blank line": lambda lines: ["", *lines],
    "CRLF line ends": lambda lines: [line + "\r" for line in lines],
    "no header row": lambda lines: lines[1:],
    "header reordered, upper case, with a label column": lambda lines: [
        ",".join(reversed(lines[0].upper().split(","))) + ",churn",
        *[",".join(reversed(line.split(","))) + ",0" for line in lines[1:]]],
}


@pytest.mark.parametrize("change", list(UNUSUAL_LINES))
def test_the_c_reader_path_declines_or_agrees_on_unusual_lines(served, change: str) -> None:
    module, model = served
    _, lines = _big_csv()

    _agree_or_decline(module, model, "\n".join(UNUSUAL_LINES[change](lines)) + "\n")


def test_a_numeric_column_of_true_and_false_is_refused_not_read_as_one_and_zero(served) -> None:
    module, model = served
    frame, lines = _big_csv()
    position = list(frame.columns).index("paperless_billing")
    for index in range(1, len(lines)):
        cells = lines[index].split(",")
        cells[position] = "True" if cells[position] == "1" else "False"
        lines[index] = ",".join(cells)

    with pytest.raises(module.BadRequest, match=r"'paperless_billing' on CSV line 2 is '(True|False)', not a number"):
        module.Rows("csv", text="\n".join(lines) + "\n").frame(module._schema(model))


def test_json_rows_of_mixed_types_predict_what_the_typed_frame_predicts(served, rows: pd.DataFrame) -> None:
    features = rows.drop(columns=[contracts.TARGET_COLUMN])
    records = features.to_dict(orient="records")
    records[0]["tenure_months"] = str(records[0]["tenure_months"])  # numbers as text are read as CSV cells are
    records[1]["contract_type"] = None

    body, _ = _invoke(served, json.dumps(records), "application/json", "text/csv")

    expected = served[1].predict_proba(features.astype({"tenure_months": float}).assign(
        contract_type=[np.nan if i == 1 else v for i, v in enumerate(features["contract_type"])]))[:, 1]
    assert _csv_probabilities(body) == pytest.approx(expected, abs=1e-6)


def _reference_csv(probabilities: np.ndarray) -> str:
    return "".join(f"{p:.6f},{int(p >= 0.5)}\n" for p in probabilities.tolist())


def _reference_json(probabilities: np.ndarray) -> str:
    return json.dumps({"predictions": [{"churn_probability": round(p, 6), "churn": int(p >= 0.5)}
                                       for p in probabilities.tolist()]})


def test_numpy_formatted_answers_are_pythons_formatting_byte_for_byte(served) -> None:
    module, _ = served
    rng = np.random.default_rng(2024)
    edges = [0.0, 1.0, 0.5, 1e-7, 4.9e-7, 5e-7, 5.1e-7, 1e-6, 1.5e-5, 1e-5, 9.95e-5, 1e-4, 1.2e-4, 0.1234565,
             0.9999995, 0.9999994, 0.25, 0.1]
    for power in (1, 3, 12, 40):
        probabilities = np.concatenate([rng.random(3000) ** power, edges])
        assert module.output_fn(probabilities, "text/csv")[0] == _reference_csv(probabilities)
        assert module.output_fn(probabilities, "application/json")[0] == _reference_json(probabilities)
