"""What every benchmark report records: the machine and date, and a JSON file written whole."""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path


def machine() -> dict:
    """The platform, processor, core count and today's date, stored with every set of figures."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "date": datetime.date.today().isoformat()}


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON at `path`, written to a temporary file and renamed (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    temporary.replace(path)
