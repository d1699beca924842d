"""`blankfilter bench`: both variants run in their own process and the table has every stage.

Speed itself is measured by the benchmark, never asserted here (timings depend on the machine).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from conftest import FRAMES, TINY_U8

from firmware_app.bench import STAGES

RunCli = Callable[..., CompletedProcess[str]]


def test_bench_json_reports_every_stage_for_both_variants(run_cli: RunCli) -> None:
    done = run_cli("bench", "--images", FRAMES / "peru", "--model", TINY_U8, "--repeat", "1", "--json", check_rc=0)
    results = json.loads(done.stdout)
    assert set(results) == {"reduced", "naive"}
    for variant, result in results.items():
        assert result["variant"] == variant
        assert result["files"] == 2 and result["frames"] == 2, "one counted pass over both frames"
        assert result["source_size"] == [3264, 2448]
        assert set(result["median_ms"]) == set(STAGES)
        assert all(ms > 0 for ms in result["median_ms"].values())
        assert result["peak_rss_mb"] > 0
    assert results["reduced"]["run_once_frames_per_s"] > 0, "the end-to-end run --once pass ran"
    assert results["naive"]["run_once_frames_per_s"] is None


def test_bench_table_lists_stages_ratios_and_memory(run_cli: RunCli) -> None:
    done = run_cli("bench", "--images", FRAMES / "peru", "--model", TINY_U8, "--repeat", "1", check_rc=0)
    table = done.stdout
    for stage in (*STAGES, "decode+preprocess", "non-model share", "frames/s", "peak RSS", "run --once"):
        assert stage in table, f"{stage} missing from:\n{table}"
    assert "naive / trap" in table
    assert "3264x2448" in table


def test_bench_on_a_folder_without_jpegs_is_a_clear_error(run_cli: RunCli, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no frames here")
    done = run_cli("bench", "--images", tmp_path, "--model", TINY_U8, "--repeat", "1")
    assert done.returncode == 2
    assert "no JPEG frames found" in done.stderr and str(tmp_path) in done.stderr
    assert "Traceback" not in done.stderr
