"""Benchmark reports say which machine they ran on: the record (benchmarks/machine.py), how reports keep it
across sittings (benchmarks/report.py), and how docs/results.md labels rows from it (benchmarks/results_md.py)."""

import json
import sys
import time
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
if str(BENCHMARKS) not in sys.path:  # the scripts import their siblings (report, machine), as when run from there
    sys.path.insert(0, str(BENCHMARKS))

import machine  # noqa: E402
import report  # noqa: E402
import results_md  # noqa: E402

OLD_MACHINE = {"platform": "Linux-6.18.44-x86_64", "processor": "x86_64", "cores": 2, "date": "2026-11-23"}


def test_the_record_names_the_cpu_its_cores_threads_and_measured_peaks_in_about_a_second() -> None:
    started = time.perf_counter()
    record = machine.machine_record(thread_policy="fixed 2")
    assert time.perf_counter() - started < 3.0
    assert record["cpu_model"] and set(record["cpu_flags"]) <= set(machine.FLAGS)
    if Path("/proc/cpuinfo").is_file():  # read from the CPU's flags, not a fixed list
        words = set(Path("/proc/cpuinfo").read_text().split())
        assert set(record["cpu_flags"]) == set(machine.FLAGS) & words
    seen = record["cores_seen"]
    assert seen["os_cpu_count"] == record["cores"] >= (seen["affinity"] or 1) >= 1
    assert seen["cgroup_quota"] is None or seen["cgroup_quota"] > 0
    peak = record["matmul_peak"]
    assert peak["fp32"]["gflops"] > 0 and peak["bf16"]["gflops"] > 0 and peak["fp32"]["repeats"] >= 2
    assert peak["threads"] == record["threads"]["torch"] == torch.get_num_threads()
    assert record["thread_policy"] == "fixed 2" and record["torch"] == torch.__version__
    assert record["utc"].endswith("+00:00") and record["date"] == record["utc"][:10]
    assert len(record["load_average"]) == 3 and all(v >= 0 for v in record["load_average"])


def test_a_sitting_records_the_load_before_and_after() -> None:
    with machine.sitting("as given", peaks=False) as record:
        assert "load_before" in record and "load_after" not in record
    assert len(record["load_after"]) == 3 and record["thread_policy"] == "as given"


@pytest.fixture
def fresh_sitting(monkeypatch: pytest.MonkeyPatch) -> None:
    """report's per-process record, started afresh and without the 1 s peak measurement."""
    monkeypatch.setattr(report, "_SITTING", {})
    monkeypatch.setattr(report, "_EARLIER", {})
    monkeypatch.setattr(report, "machine_record", lambda policy: machine.machine_record(policy, peaks=False))


def test_an_appended_report_keeps_each_sittings_machine(tmp_path: Path, fresh_sitting: None) -> None:
    path = tmp_path / "results-table.json"
    old_runs = [{"row": "lenet5-fashion", "seed": 0, "test_accuracy": 0.9, "train_seconds": 38.0, "epochs_run": 10}]
    path.write_text(json.dumps({"machine": OLD_MACHINE, "table": [], "runs": old_runs}))  # before records existed
    record = report.machine("cnnlab train's own")
    runs = report.earlier_runs(path) + [{**old_runs[0], "row": "fast", "train_seconds": 9.0}]
    report.write_json(path, {"machine": record, "table": [], "runs": runs})
    written = json.loads(path.read_text())
    old, new = (run["sitting"] for run in written["runs"])
    assert old == "unrecorded, 2026-11-23" and new == record["utc"]
    assert written["machines"][old] == OLD_MACHINE and written["machines"][new]["cpu_model"] == record["cpu_model"]
    assert written["machine"]["load_before"] == record["load_average"] and len(written["machine"]["load_after"]) == 3
    labels = [results_md.machine_label(m) for m in results_md.run_machines(written, written["runs"])]
    assert labels[0] == ("measured on another machine, 2026-11-23, platform Linux-6.18.44-x86_64, "
                         "processor x86_64, cores 2")
    assert labels[1].startswith(record["cpu_model"]) and "load average" in labels[1]


def test_results_md_labels_each_row_with_its_machine(tmp_path: Path, fresh_sitting: None,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    record = report.machine(None)
    runs = [{"row": "a", "sitting": "unrecorded, 2026-11-23"}, {"row": "b", "sitting": record["utc"]}]
    table = [{"row": r, "data": "d", "what": "w", "seeds": 1, "accuracy_mean": 0.9, "accuracy_min": 0.9,
              "accuracy_max": 0.9, "train_seconds_median": 1.0, "epochs_run": [1], "command": "c"} for r in "ab"]
    report.write_json(tmp_path / "results-table.json", {"machine": record, "table": table, "runs": runs})
    monkeypatch.setattr(results_md, "RESULTS", tmp_path)
    results_md.cnnlab_rows()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| a |") or line.startswith("| b |")]
    assert [row.split(" | ")[-2] for row in rows] == ["a", "b"]  # the machine column: a letter per machine
    assert "Machines: (a) measured on another machine, date not recorded" in out  # "unrecorded": no record kept
    assert "; (b) " + record["cpu_model"] in out
