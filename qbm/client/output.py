"""How the client prints: sizes, durations, tables whose last column is never cut, and "describe" blocks."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TextIO


def human_size(size: int | float | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def human_duration(seconds: float | None) -> str:
    """``0:07``, ``12:03``, ``1:02:03`` (as restic shows ETAs); ``-`` when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return None


def table(rows: list[list[str]], headers: list[str], out: TextIO) -> None:
    """Columns padded to their widest cell; the last column is printed whole (never cut)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip(), file=out)


def describe(pairs: list[tuple[str, Any]], out: TextIO) -> None:
    """``Label:  value`` lines (Velero's ``describe``); a dict value is shown as indented ``key: value`` lines."""
    width = max(len(label) for label, _ in pairs) + 2
    for label, value in pairs:
        if isinstance(value, dict):
            print(f"{label}:", file=out)
            for key, item in value.items():
                print(f"  {key}: {show(item)}", file=out)
        else:
            print(f"{label + ':':<{width}}{show(value)}", file=out)


def show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(show(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={show(v)}" for k, v in value.items()) or "-"
    return str(value)
