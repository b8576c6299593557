"""benchmarks/__main__.py: the missed targets of a benchmark's payload and the summary table."""

import pathlib

from benchmarks.__main__ import missed_targets, parts, summary, write_summary


def payload(speedup, target, **extra):
    return {"benchmark": "demo", "baseline": "reference", "platform": "cpu", "cpus": 2, "jax": "0.x",
            "cases": {"reference": {"seconds": 0.5, "speedup_vs_baseline": 1.0, "target_speedup": None},
                      "ours": {"seconds": 0.5 / speedup, "speedup_vs_baseline": speedup, "target_speedup": target}},
            **extra}


def test_missed_targets_lists_ratios_below_target_and_named_checks():
    assert missed_targets("demo", payload(2.0, 1.5)) == []
    assert missed_targets("demo", payload(1.2, 1.5)) == ["demo: ours"]
    assert missed_targets("demo", payload(2.0, None, missed=["peak memory 3.1x > 2.5x"])) == [
        "demo: peak memory 3.1x > 2.5x"]
    assert missed_targets("demo", payload(2.0, None, load_under_1s=False, load_seconds=1.5)) == [
        "demo: runner.load took 1.50 s >= 1 s"]


def test_summary_has_one_row_per_case_with_ratio_target_and_verdict(tmp_path):
    payloads = {"fast": payload(2.0, 1.5), "slow": payload(1.2, 1.5)}
    missed = [m for name, p in payloads.items() for m in missed_targets(name, p)]
    text = summary(payloads, missed, when="2026-12-06")
    rows = [line for line in text.splitlines() if line.startswith("| fast") or line.startswith("| slow")]
    assert len(rows) == 4
    assert "| fast | ours | 250.0 | 2.00× | ≥ 1.5× | met |" in rows
    assert "| slow | ours | 416.7 | 1.20× | ≥ 1.5× | **missed** |" in rows
    assert "| fast | reference (baseline) | 500.0 | 1.00× |  |  |" in rows
    assert text.rstrip().endswith("* slow: ours") and "# Benchmarks (2026-12-06)" in text
    path = write_summary(text, str(tmp_path))
    assert pathlib.Path(path).read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]


def test_a_benchmark_of_several_payloads_is_summarised_part_by_part():
    """``landscape_curvature`` reports three comparisons, each against its own baseline: each is a
    row group of the summary, and a payload without cases (``rules_residual_bytes``) is none."""
    several = {"cases": {}, "parts": {"a": payload(2.0, 1.5), "b": payload(1.2, 1.5)}}
    flat = {**parts("curvature", several), **parts("bytes", {"benchmark": "bytes", "cases": {}})}
    assert list(flat) == ["a", "b", "bytes"]
    text = summary(flat, [m for name, p in flat.items() for m in missed_targets(name, p)])
    assert "| a | reference (baseline) | 500.0 | 1.00× |  |  |" in text and "* b: ours" in text
