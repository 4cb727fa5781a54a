"""scripts/gpu_suite.py --dry-run: every GPU part runs on the CPU at tiny sizes, so the suite cannot rot
between lent GPUs (issue 30)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SUITE = Path(__file__).resolve().parents[2] / "scripts" / "gpu_suite.py"


def run_suite(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(SUITE), "--dry-run", "--out", str(out), "--work", str(tmp_path / "w"),
                           *args], capture_output=True, text=True, timeout=600)
    summary = json.loads((out / "gpu_suite.json").read_text()) if (out / "gpu_suite.json").exists() else {}
    md = (out / "gpu_suite.md").read_text() if (out / "gpu_suite.md").exists() else ""
    return proc, summary, md


def test_dry_run_runs_every_part_and_its_checks(tmp_path):
    proc, summary, md = run_suite(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parts = summary["parts"]
    assert list(parts) == ["embed-1b", "embed-8b", "kmeans", "store", "rds", "hierarchical", "sensitivity", "ray"]
    assert all(p["status"] == "ok" for p in parts.values()), {k: p["status"] for k, p in parts.items()}
    for shape in ("embed-1b", "embed-8b"):
        e = parts[shape]
        assert e["packed_vs_padded"]["ok"] and e["padded"]["tokens"] == e["packed"]["tokens"] > 0
        assert e["padded"]["tok_s"] > 0 and 0 <= e["padded"]["padding_waste"] < 1 and e["with_loss"]["cost"] > 0
    assert parts["kmeans"]["same_init"]["ok"] and parts["kmeans"]["same_init"]["inertia_rel_diff"] < 0.01
    assert parts["store"]["store"]["rows"] == 4000 and parts["store"]["disk_read"]["gb_per_s"] > 0
    assert parts["rds"]["slice_same_selection"] and parts["rds"]["pool"]["picked"] == 400
    for name in ("hierarchical", "sensitivity"):
        run = parts[name]["run"]
        assert run["exit"] == 0 and not run["timed_out"] and run["at_5_8m_s"] > 0
    ray = parts["ray"]
    assert ray.get("skipped") or (ray["same_selection"] and ray["shards"] == 8)
    assert md.count("\n| ") == 2 + len(parts) and "| kmeans | ok |" in md


def test_a_part_past_its_limit_is_cut_and_reported_not_the_run(tmp_path):
    # a store large enough that hierarchical-kmeans takes far longer than the 5 s it is given
    proc, summary, md = run_suite(tmp_path, "--parts", "store,hierarchical,rds", "--scale-limits", "0.04",
                                  "--dry-store-rows", "24000")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    parts = summary["parts"]
    assert parts["store"]["status"] == "ok"
    hk = parts["hierarchical"]
    assert hk["status"] == "cut" and hk["run"]["timed_out"] and hk["run"]["last_progress"], hk
    assert parts["rds"]["status"] == "ok"  # the parts after a cut one still run
    assert "reached:" in md


def test_unknown_part_is_one_line(tmp_path):
    proc, _, _ = run_suite(tmp_path, "--parts", "embed-70b")
    assert proc.returncode != 0 and "unknown part embed-70b" in proc.stderr and "Traceback" not in proc.stderr
