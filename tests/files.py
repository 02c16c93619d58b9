"""Reading a folder that a worker process may be changing at the same moment."""

from __future__ import annotations

import os
from pathlib import Path


def files_under(root: Path) -> list[Path]:
    """Every file below ``root`` (none if it is missing), sorted. Safe while another process removes folders in
    it: ``os.walk`` skips a folder that is gone by the time it is read, where ``Path.rglob`` raises."""
    return sorted(Path(folder) / name for folder, _, names in os.walk(root) for name in names)
