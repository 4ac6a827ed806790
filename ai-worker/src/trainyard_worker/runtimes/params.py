"""Framework-free input checks every runtime shares: hyperparameter numbers and reading a
CSV data file. Each problem is a :class:`UserError` naming the field and the reason."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from .base import UserError

__all__ = ["check_number", "read_csv_rows"]


def check_number(
    params: dict[str, Any],
    name: str,
    default: float | int,
    low: float,
    high: float,
    integer: bool = False,
) -> Any:
    """``hyperparameters[name]`` checked to be a number in [low, high] (an int if asked)."""
    value = params.get(name, default)
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        kind = "an integer" if integer else "a number"
        raise UserError(f"hyperparameters.{name} must be {kind}, got {value!r}")
    if not low <= value <= high:
        raise UserError(f"hyperparameters.{name} must be between {low:g} and {high:g}, got {value}")
    return int(value) if integer else float(value)


def read_csv_rows(path: Path, expected: str) -> list[list[str]]:
    """The non-blank rows of a UTF-8 CSV file, header first; ``expected`` says what an empty
    file should have held (for its error message)."""
    try:
        # utf-8-sig: spreadsheets often prepend a BOM that would corrupt the first name.
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [r for r in csv.reader(fh) if any(c.strip() for c in r)]
    except UnicodeDecodeError as exc:
        raise UserError(f"data file is not UTF-8 text: {exc}") from None
    except csv.Error as exc:
        raise UserError(f"data file is not valid CSV: {exc}") from None
    if not rows:
        raise UserError(f"data file is empty: expected {expected}")
    return rows
