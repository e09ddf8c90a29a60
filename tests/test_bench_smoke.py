"""The benchmark harness still runs end to end (it reports; nothing here
judges a number)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_benchmarks_run_quickly_and_report_ratios(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--runs",
            "1",
            "--systems",
            "raw_trio,trio_distribute",
            "--output",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "td / raw" in result.stdout
    data = json.loads(out.read_text())
    assert set(data["median"]) == {"raw_trio", "trio_distribute"}
    assert data["failures"] == []
    assert data["median"]["trio_distribute"]["bulk_gb_per_s"] > 0
    assert data["median"]["raw_trio"]["bulk_gb_per_s"] > 0
    # Calls by name and by pid are both measured.
    assert data["median"]["trio_distribute"]["call_p50_us"] > 0
    assert data["median"]["trio_distribute"]["call_pid_p50_us"] > 0
    assert " by pid" in result.stdout


def test_erlang_is_skipped_with_its_reason_where_erl_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The benchmarks live beside the package, not in it: import them from
    # the checkout (the suite runs against the installed package).
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import run

    monkeypatch.setattr("shutil.which", lambda tool: None)
    assert run._available(["raw_trio", "erlang", "trio_distribute"]) == [
        "raw_trio",
        "trio_distribute",
    ]
    assert "skipping erlang: erl not found" in capsys.readouterr().out
