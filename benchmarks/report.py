"""What every benchmark report records: the machine of its sitting (machine.py), and a JSON file written whole.

A script calls `machine(thread_policy)` once before its first run: that measures the machine (about 1 s:
CPU, cores, matmul peaks, threads, load average as `load_before`), and later calls return the same record.
`write_json` sets the record's `load_after` to the load average at each write, so the last write of a
sitting says how busy the machine was when its last run ended. A report that keeps runs from earlier
sittings (`--append`; read them with `earlier_runs`) keeps their machines too: each run is tagged with
its sitting (`"sitting"`: the record's `utc`), and `"machines"` maps every sitting still in the file to
its record. Runs from before sittings were recorded get the file's old `"machine"`, all that is known.
"""

from __future__ import annotations

import json
from pathlib import Path

from machine import load_average, machine_record

__all__ = ["machine", "earlier_runs", "write_json"]

_SITTING: dict = {}  # this process's machine record, once measured
_EARLIER: dict[str, dict] = {}  # the machines of earlier sittings whose runs this process keeps


def machine(thread_policy: object = None) -> dict:
    """This sitting's machine record (machine.machine_record), measured at the first call; `thread_policy`:
    how the benchmark's runs choose their CPU threads, as the script states it (the first call's counts)."""
    if not _SITTING:
        _SITTING.update(machine_record(thread_policy))
        _SITTING["load_before"] = _SITTING["load_average"]
    return _SITTING


def write_json(path: Path, data: dict) -> None:
    """`data` as indented JSON at `path`, written to a temporary file and renamed (never half-written).

    With a machine record under "machine": its load_after is set to now, untagged runs under "runs" are
    tagged with this sitting, and "machines" holds the record of every sitting whose runs are in `data`.
    """
    record = data.get("machine")
    if isinstance(record, dict) and "utc" in record:
        record["load_after"] = load_average()
        runs = [r for r in data.get("runs", []) if isinstance(r, dict)]
        for run in runs:
            run.setdefault("sitting", record["utc"])
        known = {**_EARLIER, record["utc"]: record}
        sittings = {run["sitting"] for run in runs}
        data = {**data, "machines": {utc: known[utc] for utc in known if utc in sittings}} if runs else data
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=1) + "\n")
    temporary.replace(path)


def earlier_runs(path: Path) -> list[dict]:
    """The runs of the report at `path` (none when there is no file), each tagged with its sitting, whose
    machines `write_json` then keeps; runs from before sittings were recorded get the file's own "machine"."""
    if not path.is_file():
        return []
    old = json.loads(path.read_text())
    _EARLIER.update(old.get("machines", {}))
    untagged = [run for run in old.get("runs", []) if "sitting" not in run]
    if untagged:
        machine = old.get("machine")
        key = f"unrecorded, {machine.get('date', '?') if isinstance(machine, dict) else old.get('date', '?')}"
        _EARLIER[key] = machine if isinstance(machine, dict) else {"description": machine, "date": old.get("date")}
        for run in untagged:
            run["sitting"] = key
    return list(old.get("runs", []))
