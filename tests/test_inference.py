"""training/inference.py, loaded from the model archive the way the scikit-learn container loads it."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import tarfile
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


def test_non_numeric_value_for_a_numeric_feature_is_a_400_naming_it(served, rows: pd.DataFrame) -> None:
    record = rows.drop(columns=[contracts.TARGET_COLUMN]).iloc[0].to_dict()
    record["monthly_charges"] = "a lot"
    with pytest.raises(served[0].BadRequest, match="'monthly_charges' must be a number, got 'a lot'"):
        _invoke(served, json.dumps([record]), "application/json", "application/json")


def test_csv_row_with_wrong_field_count_is_a_400_listing_the_columns(served) -> None:
    with pytest.raises(served[0].BadRequest, match="expected 10 in this order: tenure_months, monthly_charges"):
        _invoke(served, "12,70.5,840\n", "text/csv", "text/csv")


def test_csv_header_lacking_a_feature_is_a_400_naming_it(served, rows: pd.DataFrame) -> None:
    payload = rows.drop(columns=["support_calls"]).to_csv(index=False)
    assert payload is not None
    with pytest.raises(served[0].BadRequest, match=r"CSV header lacks features \['support_calls'\]"):
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
