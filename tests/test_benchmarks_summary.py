"""benchmarks/__main__.py: the missed targets of a benchmark's payload and the summary table."""

import pathlib

import pytest

from benchmarks.__main__ import missed_targets, parts, summary, write_summary
from benchmarks.harness import check


def payload(speedup, target, **extra):
    return {"benchmark": "demo", "baseline": "reference", "platform": "cpu", "cpus": 2, "jax": "0.x",
            "cases": {"reference": {"seconds": 0.5, "speedup_vs_baseline": 1.0, "target_speedup": None},
                      "ours": {"seconds": 0.5 / speedup, "speedup_vs_baseline": speedup, "target_speedup": target}},
            **extra}


def checked(*targets):
    """A payload with one :func:`check` per ``(what, value, goal, at_most)``."""
    extra = {}
    for what, value, goal, at_most in targets:
        check(extra, what, value, goal, at_most=at_most)
    return payload(2.0, None, **extra)


@pytest.mark.parametrize("value, goal, at_most, met", [(0.48, 0.55, True, True), (0.55, 0.55, True, True),
                                                       (0.56, 0.55, True, False), (2.4, 2.0, False, True),
                                                       (1.9, 2.0, False, False)])
def test_a_check_is_met_on_the_side_of_its_goal(value, goal, at_most, met):
    (c,) = checked(("ratio", value, goal, at_most))["checks"]
    assert c["met"] is met and c["target"] == f"{'≤' if at_most else '≥'} {goal:g}×"
    assert missed_targets("demo", checked(("ratio", value, goal, at_most))) == (
        [] if met else [f"demo: ratio {value:.2f}× (target {c['target']})"])


def test_missed_targets_lists_ratios_below_target_checks_and_messages():
    assert missed_targets("demo", payload(2.0, 1.5)) == []
    assert missed_targets("demo", payload(1.2, 1.5)) == ["demo: ours"]
    assert missed_targets("demo", payload(2.0, None, missed=["flat draws give other parameters"])) == [
        "demo: flat draws give other parameters"]
    assert missed_targets("demo", checked(("mlp / neural-tangents", 0.58, 0.55, True),
                                          ("cnn / neural-tangents", 0.5, 0.7, True))) == [
        "demo: mlp / neural-tangents 0.58× (target ≤ 0.55×)"]


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
    assert "## Targets" in text
    path = write_summary(text, str(tmp_path))
    assert pathlib.Path(path).read_text(encoding="utf-8") == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]


def test_summary_has_one_row_per_check_with_value_target_and_verdict():
    payloads = {"compare": checked(("mlp / neural-tangents", 0.58, 0.55, True), ("cnn / neural-tangents", 0.5, 0.7,
                                                                               True))}
    text = summary(payloads, missed_targets("compare", payloads["compare"]), when="2026-12-06")
    targets = text.split("## Targets")[1]
    assert "| compare | mlp / neural-tangents | 0.58× | ≤ 0.55× | **missed** |" in targets
    assert "| compare | cnn / neural-tangents | 0.50× | ≤ 0.7× | met |" in targets
    assert targets.rstrip().endswith("* compare: mlp / neural-tangents 0.58× (target ≤ 0.55×)")


def test_a_benchmark_of_several_payloads_is_summarised_part_by_part():
    """``landscape_curvature`` reports three comparisons, each against its own baseline: each is a
    row group of the summary, and a payload without cases (``rules_residual_bytes``) is none."""
    several = {"cases": {}, "parts": {"a": payload(2.0, 1.5), "b": payload(1.2, 1.5)}}
    flat = {**parts("curvature", several), **parts("bytes", {"benchmark": "bytes", "cases": {}})}
    assert list(flat) == ["a", "b", "bytes"]
    text = summary(flat, [m for name, p in flat.items() for m in missed_targets(name, p)])
    assert "| a | reference (baseline) | 500.0 | 1.00× |  |  |" in text and "* b: ours" in text
