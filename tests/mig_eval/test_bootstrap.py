"""Bootstrap intervals against cases worked out by hand, and the paired difference of two rows."""

from __future__ import annotations

import json

import pytest

from mig_eval.bootstrap import paired_difference, plus_minus, sample_scores, task_intervals
from mig_eval.metrics import aggregate
from mig_eval.report import differences_markdown, paired_differences


def scores(task: str, values: list[float], prefix: str = "s") -> dict[str, list[tuple[str, float]]]:
    return {task: [(f"{prefix}{i}", float(v)) for i, v in enumerate(values)]}


def test_interval_of_one_task_matches_the_binomial_worked_by_hand():
    # 1 right of 4: a resample's mean is Binomial(4, 1/4) / 4, P = .316 .422 .211 .047 .004 for
    # 0 .25 .5 .75 1; the 2.5% point is 0 (P(0) > .025) and the 97.5% point 0.75 (P(<= .5) = .949 < .975,
    # P(<= .75) = .996)
    ci = task_intervals(scores("diff", [0, 0, 0, 1]), n_boot=20000)
    assert ci["diff"] == [0.0, 0.75] and ci["overall"] == [0.0, 0.75]
    # 50 right of 100: the mean's sd is sqrt(.25 / 100) = .05, so the interval is about .5 +- 1.96 * .05
    lo, hi = task_intervals(scores("diff", [1, 0] * 50), n_boot=20000)["diff"]
    assert (hi - lo) / 2 == pytest.approx(0.098, abs=0.006) and (lo + hi) / 2 == pytest.approx(0.5, abs=0.01)


def test_macro_average_resamples_each_task_on_its_own():
    # task a always right; task b 1 of 2: a replicate's average is (1 + m_b) / 2, m_b in {0, .5, 1} with
    # P 1/4 1/2 1/4, so the interval is [.5, 1]; a task never borrows samples of another
    by_task = {**scores("a", [1, 1]), **scores("b", [0, 1])}
    ci = task_intervals(by_task, groups={"just_a": ["a"]}, n_boot=20000)
    assert ci["a"] == [1.0, 1.0] and ci["b"] == [0.0, 1.0]
    assert ci["overall"] == [0.5, 1.0] and ci["group:just_a"] == [1.0, 1.0]


def test_paired_difference_by_hand_and_why_pairing_matters():
    a, b = scores("t", [0, 0, 0, 0]), scores("t", [1, 0, 0, 0])
    d = paired_difference(a, b, n_boot=20000)  # per-sample differences 1 0 0 0: the case above
    assert d["diff"] == 0.25 and d["ci95"] == [0.0, 0.75] and not d["beyond_noise"] and d["n"] == 4
    # 60 samples, half right; b fixes 6 of the wrong ones. Unpaired, the two rows' intervals overlap;
    # paired, the difference (6 of 60 samples, never negative) is beyond noise
    base = [1, 0] * 30
    better = list(base)
    for i in range(1, 13, 2):
        better[i] = 1
    a, b = scores("t", base), scores("t", better)
    ia, ib = task_intervals(a)["t"], task_intervals(b)["t"]
    assert ia[1] > ib[0]  # overlapping
    d = paired_difference(a, b)
    assert d["diff"] == pytest.approx(0.1) and d["beyond_noise"] and d["ci95"][0] > 0
    # samples are matched by id, not by position, and only those both rows scored count
    shuffled = {"t": list(reversed(b["t"]))[:-1] + [("extra", 1.0)]}
    d2 = paired_difference(a, shuffled)
    assert d2["n"] == 59 and d2["diff"] == pytest.approx(6 / 59)
    with pytest.raises(ValueError, match="share no scored sample"):
        paired_difference(a, scores("other_task", base))
    with pytest.raises(ValueError, match="occurs twice"):
        paired_difference(a, {"t": b["t"] + [("s0", 1.0)]})


def test_metrics_json_carries_intervals_and_tables_print_half_widths(tmp_path):
    preds = [{"id": f"x{i}", "task": "diff", "iou": 1.0 if i < 1 else 0.0} for i in range(4)]
    report = aggregate(preds)
    assert report.tasks["diff"]["ci95"]["acc@0.5"] == report.overall["ci95"]["acc@0.5"]
    assert sample_scores(preds, "miou")["diff"][0] == ("x0", 1.0)
    assert plus_minus(0.25, [0.0, 0.75]) == "25.00 ± 37.50" and plus_minus(0.25, None) == "25.00"
    # report-level differences read predictions.jsonl files of two evaluations
    for name, ious in (("base", [0, 0, 0, 0]), ("sft", [1, 1, 1, 1])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "predictions.jsonl").write_text("".join(
            json.dumps({"index": i, "id": f"x{i}", "task": "diff", "iou": v}) + "\n" for i, v in enumerate(ious)))
    diffs = paired_differences({n: tmp_path / n / "predictions.jsonl" for n in ("base", "sft")}, [("base", "sft")])
    assert diffs[0]["diff"] == 1.0 and diffs[0]["ci95"] == [1.0, 1.0] and diffs[0]["beyond_noise"]
    assert "| base | sft | +100.00 | [+100.00, +100.00] | 4 | beyond noise |" in differences_markdown(diffs)
