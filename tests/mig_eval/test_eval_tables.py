"""Paper tables: the transcribed numbers are internally consistent (averages, the papers' groups),
and the renderer puts our rows beside the paper's, from the CLI and from metrics files."""

from __future__ import annotations

import csv
import json
from statistics import mean

import pytest

from mig_data.schema import MIG_TASKS
from mig_eval.metrics import GROUPS, aggregate, difficulty_tier
from mig_eval.tables import list_tables, load_table, metric_value, table_rows, write_table
from mig_lab.config import ConfigError
from scripts.paper_table import main

REQUIRED = {"migician_table1", "migician_table5", "migician_table6", "migician_table7", "migician_table9",
            "migician_table10", "coldstart_rl_table2", "coldstart_rl_table3", "coldstart_rl_table9",
            "coldstart_rl_table10", "mirg_rl_table1", "mirg_rl_table2", "mirg_rl_table3"}
KEYS = {"overall"} | {f"task:{t}" for t in MIG_TASKS} | {f"group:{g}" for g in GROUPS} | \
    {f"tier:{t}" for t in ("easy", "medium", "hard")}


def rows_of(name):
    t = load_table(name)
    keys = [c["key"] for c in t["columns"]]
    return {r["name"]: dict(zip(keys, r["values"])) for s in t["sections"] for r in s["rows"]}


def test_every_required_table_is_transcribed_and_well_formed():
    assert REQUIRED <= set(list_tables())
    for name in list_tables():
        t = load_table(name)
        assert t["name"] == name and t["metric"] == "acc@0.5" and t["caption"]
        assert all(c["key"] is None or c["key"] in KEYS for c in t["columns"]), name
        for s in t["sections"]:
            for r in s["rows"]:
                assert len(r["values"]) == len(t["columns"]), (name, r["name"])
                assert ("setting" in r) == bool(t["setting_label"]), (name, r["name"])


@pytest.mark.parametrize("name", ["migician_table1", "migician_table11", "coldstart_rl_table2",
                                  "coldstart_rl_table9", "mirg_rl_table1"])
def test_ten_task_rows_average_to_their_printed_average(name):
    """The papers' AVE is the mean of the ten task scores; a transcription typo would break it. The one
    row where the papers themselves disagree is documented in the table's notes."""
    notes = " ".join(load_table(name)["notes"])
    for row, v in rows_of(name).items():
        tasks = [v[f"task:{t}"] for t in MIG_TASKS]
        if abs(mean(tasks) - v["overall"]) > 0.011:
            assert row in notes, f"{name} {row}: mean {mean(tasks):.3f} vs printed {v['overall']}"


def test_coldstart_groups_match_our_group_definitions():
    """coldstart Table 3 (in/out of domain) from Table 2's task scores with `metrics.GROUPS`, and
    Table 10's referential/spontaneous from Table 9's 'Ours-Full'."""
    t2 = rows_of("coldstart_rl_table2")
    for row, v in rows_of("coldstart_rl_table3").items():
        for group in ("in_domain", "out_of_domain"):
            got = mean(t2[row][f"task:{t}"] for t in GROUPS[group])
            assert got == pytest.approx(v[f"group:{group}"], abs=0.011), (row, group)
    ours = rows_of("coldstart_rl_table9")["Ours-Full"]
    t10 = rows_of("coldstart_rl_table10")["w. KL, β=1e-3 (Ours)"]
    for group in ("referential", "spontaneous"):
        assert mean(ours[f"task:{t}"] for t in GROUPS[group]) == pytest.approx(t10[f"group:{group}"], abs=0.011)


def fake_metrics(acc: dict[str, float], **extra) -> dict:
    preds = []
    for task, a in acc.items():
        preds += [{"task": task, "iou": 1.0 if k < round(10 * a) else 0.0} for k in range(10)]
    return {**aggregate(preds).to_json(), **extra}


def test_render_puts_our_rows_beside_the_papers(tmp_path):
    ours = {"tiny": fake_metrics({t: 0.5 for t in MIG_TASKS}), "partial": fake_metrics({"diff": 0.3})}
    md = write_table("migician_table1", ours, tmp_path, beside={"tiny": "Qwen2-VL-7B"})
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("| Qwen2-VL-7B |"))
    # 5 of 10 right per task: the 95% bootstrap interval of a task is [20, 80] (Binomial(10, 0.5) / 10),
    # of the mean of ten such tasks about +-9.5
    assert lines[i + 1] == "| **tiny** |" + " **50.00 ± 30.00** |" * 10 + " **50.00 ± 9.50** |"
    assert "| **this codebase** |" in md and "| **partial** | **30.00 ± 30.00** | - |" in md
    assert "partial: the average is over the 1 task(s) evaluated" in md
    assert "| Human | 99.50* |" in md
    rows = list(csv.reader((tmp_path / "migician_table1.csv").open()))
    assert rows[0][:3] == ["source", "model", "Static"]
    assert ["paper", "Migician", "65.15"] == rows[[r[1] for r in rows].index("Migician")][:3]
    assert [r[0] for r in rows].count("ours") == 2
    with pytest.raises(ConfigError, match="not in it"):
        table_rows("migician_table1", ours, beside={"tiny": "GPT-5"})
    with pytest.raises(ConfigError, match="no paper table named"):
        load_table("migician_table99")


def test_groups_tiers_and_settings_columns():
    m = fake_metrics({"diff": 1.0, "region": 0.0, "reasoning": 0.5})
    assert metric_value(m, "group:in_domain", "acc@0.5") == pytest.approx(50.0)  # mean of diff and region
    assert metric_value(m, "group:out_of_domain", "acc@0.5") == pytest.approx(50.0)  # reasoning only
    assert metric_value(m, None, "acc@0.5") is None and metric_value(m, "tier:easy", "acc@0.5") is None
    m["eval"] = {"answer_form": "all", "cot": "multi"}
    _, header, body, _ = table_rows("migician_table10", {"x": m}, beside={"x": "Qwen2-VL-7B (All+mCoT)"})
    assert header[:3] == ["source", "model", "Settings"]
    i = body.index(["paper", "Qwen2-VL-7B", "All+mCoT", "45.71", "9.38", "17.55", "15.54"])
    assert body[i + 1][:3] == ["ours", "x", "All+mCoT"]
    assert sum(r[0] == "ours" for r in body) == 1  # under that row only, not under every Qwen2-VL-7B row


def test_difficulty_tiers_rule_and_aggregation():
    assert difficulty_tier({"num_images": 2, "distractors": 2}) == "easy"
    assert difficulty_tier({"num_images": 3, "distractors": 4}) == "medium"
    assert difficulty_tier({"num_images": 4, "distractors": 8}) == "medium"
    assert difficulty_tier({"num_images": 4, "distractors": 9}) == "hard"
    assert difficulty_tier({"num_images": 5, "distractors": 0}) == "hard"
    assert difficulty_tier({"num_images": 2, "distractors": 0, "difficulty": "hard"}) == "hard"
    assert difficulty_tier({}) is None
    preds = [{"task": "diff", "iou": 0.9, "tier": "easy"}, {"task": "diff", "iou": 0.1, "tier": "easy"},
             {"task": "region", "iou": 0.6, "tier": "hard"}, {"task": "region", "iou": 0.6, "tier": None}]
    m = aggregate(preds)
    assert m.tiers["easy"]["acc@0.5"] == 0.5 and m.tiers["easy"]["n"] == 2
    assert m.tiers["hard"]["n"] == 1 and "medium" not in m.tiers
    assert type(m).from_json(m.to_json()) == m  # metrics.json round-trips to the typed report


def test_cli_reads_metrics_files_stage_folders_and_run_folders(tmp_path, capsys):
    stage = tmp_path / "cache" / "evaluate-abc"
    stage.mkdir(parents=True)
    (stage / "metrics.json").write_text(json.dumps(fake_metrics({t: 0.2 for t in MIG_TASKS})))
    run = tmp_path / "run"
    run.mkdir()
    (run / "stages.json").write_text(json.dumps({"eval_sft": {"kind": "evaluate", "dir": str(stage)},
                                                  "data": {"kind": "make_data", "dir": str(tmp_path)}}))
    assert main(["mirg_rl_table1", f"mine={stage / 'metrics.json'}", str(run), "--beside", "mine=Migician",
                 "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "mirg_rl_table1.md").read_text()
    assert "| **mine** |" in md and "| **eval_sft** |" in md
    assert md.index("| Migician |") < md.index("| **mine** |") < md.index("| MIRG-RL-7B |")
    assert main(["coldstart_rl_table3", str(stage)]) == 0 and "| **evaluate-abc** | **20.00 ± 12.50** |" in capsys.readouterr().out
    assert main(["migician_table1", str(tmp_path / "nothing")]) == 2
    assert main(["--list"]) == 0 and "coldstart_rl_table9: coldstart_rl Table 9" in capsys.readouterr().out
