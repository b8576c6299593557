"""The command line's tables: rows of dicts rendered by pandas as aligned text, CSV or JSON.

``table`` is for people: floats to 4 significant digits, missing values blank, lists and dicts as
JSON, text left-aligned and numbers right-aligned. ``csv`` and ``json`` are for scripts: full
precision, one header line (CSV) or one JSON array of objects (JSON; a missing value or a
non-finite float is ``null``, so that any JSON parser reads it)."""

from __future__ import annotations

import json
import math
import numbers

__all__ = ["FORMATS", "render"]

FORMATS = ("table", "csv", "json")


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plain(v):
    """A JSON-ready cell: numpy scalars and arrays as Python numbers and lists, non-finite floats as None."""
    if hasattr(v, "tolist") and not isinstance(v, (list, dict, str)):
        v = v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _text(v) -> str:
    v = _plain(v)
    if v is None:
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _csv_cell(v):
    v = _plain(v)
    return "" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else v


def render(rows: list[dict], fmt: str = "table") -> str:
    """``rows`` (dicts; the columns are the union of their keys, in first-seen order) as ``fmt``:
    ``"table"``, ``"csv"`` or ``"json"``."""
    import pandas as pd  # deferred: the CLI imports this module on every command

    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "json":
        return json.dumps([{k: _plain(v) for k, v in row.items()} for row in rows], allow_nan=False)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if not columns:
        return ""
    frame = pd.DataFrame([[row.get(c) for c in columns] for row in rows], columns=columns, dtype=object)
    if fmt == "csv":
        return frame.map(_csv_cell).to_csv(index=False, lineterminator="\n").rstrip("\n")
    cells = frame.map(_text)
    for c in columns:  # numbers right-aligned, text left-aligned (pandas would right-align every string)
        numeric = all(isinstance(v, numbers.Number) and not isinstance(v, bool) or _missing(v) for v in frame[c])
        width = max([len(str(c)), *(len(v) for v in cells[c])])
        cells[c] = [v.rjust(width) if numeric else v.ljust(width) for v in cells[c]]
    return "\n".join(line.rstrip() for line in cells.to_string(index=False, justify="left").splitlines())
