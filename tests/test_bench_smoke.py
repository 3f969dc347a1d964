"""`python -m bench --smoke`: every scenario runs against real child servers at tiny sizes,
exits 0 and prints its row (the figures themselves are the full run's business)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.scenarios import SCENARIOS

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_runs_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    for name in SCENARIOS:
        assert any(line.startswith(f"{name} ") for line in lines), f"no row for {name}"
    results = json.loads(out.read_text())["scenarios"]
    assert list(results) == list(SCENARIOS)
    for name, result in results.items():
        assert result["failed"] is None, f"{name}: {result['failed']}"
        assert result["figures"], f"{name}: no figures"
        assert not result["errors"], f"{name}: server problems {result['errors']}"
