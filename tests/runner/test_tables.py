"""The command line's tables (``jaxlearn.runner.tables.render``) in each format, read back."""

import csv
import io
import json

import numpy as np
import pytest

from jaxlearn.runner.tables import render

ROWS = [{"name": "a", "loss": 0.123456789, "steps": np.int64(20), "widths": (64, 64)},
        {"name": "longer name", "loss": float("nan"), "extra": {"k": 1}, "curve": np.array([0.5, np.inf])}]


def test_table_aligns_text_left_numbers_right_and_blanks_missing_values():
    lines = render(ROWS).splitlines()
    assert lines[0].split() == ["name", "loss", "steps", "widths", "extra", "curve"]
    assert lines[1].startswith("a           0.1235    20 [64, 64]")  # 4 significant digits
    assert lines[2].startswith("longer name") and '{"k": 1}' in lines[2] and "nan" not in lines[2]
    assert all(line == line.rstrip() for line in lines)


def test_csv_and_json_keep_full_precision_and_parse():
    rows = list(csv.DictReader(io.StringIO(render(ROWS, "csv"))))
    assert float(rows[0]["loss"]) == 0.123456789 and rows[0]["steps"] == "20"
    assert json.loads(rows[0]["widths"]) == [64, 64] and rows[1]["loss"] == "" and rows[0]["extra"] == ""
    assert json.loads(rows[1]["curve"]) == [0.5, None]
    back = json.loads(render(ROWS, "json"))
    assert back == [{"name": "a", "loss": 0.123456789, "steps": 20, "widths": [64, 64]},
                    {"name": "longer name", "loss": None, "extra": {"k": 1}, "curve": [0.5, None]}]


def test_empty_and_bad_format():
    assert render([]) == "" and render([], "csv") == "" and render([], "json") == "[]"
    with pytest.raises(ValueError, match="format: expected one of table, csv, json, got 'xml'"):
        render(ROWS, "xml")
