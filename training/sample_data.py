"""The deterministic synthetic churn table: the sample a new stack trains on before the team's data arrives.

    python -m training.sample_data PATH [--rows N] [--seed S]

Writes exactly the declared columns (contracts.CHURN_FEATURES, in order) and `churn`, as UTF-8 CSV with a
header row: the same bytes for the same rows and seed, so seeding a stack's data prefix is reproducible.
numpy only at import time (pandas only for make_dataset), so the program can generate it cheaply.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import contracts

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_ROWS = 8000
DEFAULT_SEED = 42
SAMPLE_FILE = contracts.SAMPLE_FILE


def _columns(n_rows: int, seed: int) -> dict[str, np.ndarray]:
    """Churn follows a logistic relationship with the usual drivers (short tenure, month-to-month
    contracts, high charges, fibre, electronic cheque, support calls) plus noise, so a linear model
    reaches a holdout AUC around 0.9: learnable, not trivially separable."""
    rng = np.random.default_rng(seed)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n_rows, p=[0.55, 0.25, 0.20])
    # Customers on longer contracts have, on average, stayed longer.
    tenure_scale = np.select([contract == "month-to-month", contract == "one-year"], [14.0, 30.0], 45.0)
    tenure = np.clip(np.round(rng.exponential(tenure_scale)), 0, 72).astype(int)
    internet = rng.choice(["fiber_optic", "dsl", "none"], n_rows, p=[0.44, 0.34, 0.22])
    base_charge = np.select([internet == "fiber_optic", internet == "dsl"], [80.0, 55.0], 22.0)
    monthly = np.round(np.clip(base_charge + rng.normal(0, 12, n_rows), 18, 120), 2)
    total = np.round(monthly * tenure * rng.uniform(0.95, 1.05, n_rows), 2)
    payment = rng.choice(
        ["electronic_check", "mailed_check", "bank_transfer", "credit_card"], n_rows, p=[0.34, 0.23, 0.22, 0.21]
    )
    support_calls = rng.poisson(1.3, n_rows)
    paperless = (rng.random(n_rows) < 0.6).astype(int)
    senior = (rng.random(n_rows) < 0.16).astype(int)
    partner = (rng.random(n_rows) < 0.48).astype(int)

    logit = 1.5 * (
        -2.2
        + 1.5 * (contract == "month-to-month")
        - 1.2 * (contract == "two-year")
        - 0.045 * tenure
        + 0.025 * (monthly - 65)
        + 0.7 * (internet == "fiber_optic")
        + 0.6 * (payment == "electronic_check")
        + 0.45 * support_calls
        + 0.3 * paperless
        + 0.4 * senior
        - 0.25 * partner
    ) + rng.normal(0, 0.4, n_rows)
    churn = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(int)

    columns = {
        "tenure_months": tenure,
        "monthly_charges": monthly,
        "total_charges": total,
        "contract_type": contract,
        "payment_method": payment,
        "internet_service": internet,
        "support_calls": support_calls,
        "paperless_billing": paperless,
        "senior_citizen": senior,
        "has_partner": partner,
    }
    # The declaration is the table: same names, same order (tests/test_data_contract.py checks the kinds).
    assert tuple(columns) == contracts.feature_names(), "sample columns drifted from contracts.CHURN_FEATURES"
    return {**columns, contracts.TARGET_COLUMN: churn}


def make_dataset(n_rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """The synthetic table as a DataFrame (declared columns in order, then `churn`)."""
    import pandas as pd

    return pd.DataFrame(_columns(n_rows, seed))


def sample_csv(n_rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> bytes:
    """The synthetic table as CSV bytes: integers as integers, decimals as Python writes them."""
    columns = _columns(n_rows, seed)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    cells = [column.tolist() for column in columns.values()]  # numpy scalars -> Python int/float/str
    writer.writerows(zip(*cells, strict=True))
    return buffer.getvalue().encode("utf-8")


def write_sample(path: Path, n_rows: int = DEFAULT_ROWS, seed: int = DEFAULT_SEED) -> Path:
    """Write the sample to `path` (a *.csv file, else a directory to hold churn.csv); return the file.

    A file that already holds these bytes is left as it is; otherwise the sample is written beside it and
    moved into place, so a concurrent run (or the Pulumi engine reading the program's asset) never reads half
    a file.
    """
    target = path if path.suffix.lower() == ".csv" and not path.is_dir() else path / SAMPLE_FILE
    content = sample_csv(n_rows, seed)
    if target.is_file() and target.read_bytes() == content:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(content)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.sample_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help=f"*.csv file to write, or a directory to hold {SAMPLE_FILE}")
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error(f"--rows {args.rows}: must be at least 1")
    written = write_sample(args.path, args.rows, args.seed)
    print(f"wrote {args.rows} rows (seed {args.seed}) to {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
