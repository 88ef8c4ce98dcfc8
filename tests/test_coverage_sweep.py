"""benchmarks/coverage.py: one family end to end (fast), and the full sweep's goals (slow: about
17 minutes on 2 cores; `pytest -m slow tests/test_coverage_sweep.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "coverage.py"


def _sweep(tmp_path: Path, *args: str, timeout: float) -> dict:
    out, doc = tmp_path / "coverage.json", tmp_path / "coverage.md"
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--doc", str(doc), *args],
                   check=True, cwd=ROOT, timeout=timeout, capture_output=True)
    assert doc.read_text().startswith("# Coverage")
    return json.loads(out.read_text())


def test_one_family_splits_exactly_and_its_skip_path_exports(tmp_path: Path) -> None:
    report = _sweep(tmp_path, "--families", "torchvision:squeezenet", "--cap", "300", timeout=400)
    (row,) = report["rows"]
    errors = [e for counts in row["recomposition"].values() for e in counts.values()]
    assert row["family"] == "squeezenet" and row["exact"] and errors and max(errors) <= 1e-5
    assert row["export"]["ok"] and row["export"]["parity"]["rel"] <= 1e-4
    assert report["summary"]["by_source"]["torchvision"] == {"total": 1, "exact": 1, "export_tried": 1,
                                                            "exported": 1}


@pytest.mark.slow
def test_full_sweep_meets_the_coverage_goals(tmp_path: Path) -> None:
    counts = _sweep(tmp_path, timeout=3600)["summary"]["by_source"]
    assert counts["torchvision"]["exact"] == counts["torchvision"]["total"]  # every classification family
    assert counts["timm"]["exact"] >= 0.95 * counts["timm"]["total"]
    for source in counts.values():
        assert source["exported"] == source["export_tried"]
