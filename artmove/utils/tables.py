"""Rows of dicts written as CSV and as Markdown tables."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from artmove.utils.io import atomic_write, printable


def cell(value: Any, float_format: str = ".4f") -> str:
    """Floats formatted, NaN/None blank: what a reader of the table needs."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return format(value, float_format)
    return printable(str(value))


def markdown_text(value: Any) -> str:
    """Text from a model, a file or a folder name as Markdown shows it: no HTML tag (``<`` and ``>`` as
    entities), no link or image (``](`` broken), no table cell boundary (``|`` escaped). What else Markdown
    would format there (emphasis) changes how it looks, never what it runs or fetches."""
    return printable(str(value)).replace("<", "&lt;").replace(">", "&gt;").replace("](", "]\\(").replace("|", "\\|")


def write_csv(path: Path, rows: Iterable[dict], columns: Sequence[str]) -> Path:
    """Written atomically: a crash never leaves half a table."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerows([cell(row.get(column), ".6g") for column in columns] for row in rows)
    return path


def markdown_table(rows: Iterable[dict], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    headers = list(headers or columns)
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        values = [markdown_text(cell(row.get(column))) or "–" for column in columns]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)
