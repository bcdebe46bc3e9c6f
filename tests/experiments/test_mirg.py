"""The MIRG-RL experiments: they compose, share stages between rows and tables, and run end to end in
`debug=tiny` (trajectory data -> trajectory SFT -> image-aware GRPO -> evaluate -> paper table)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from mig_data.cot.trajectory import INSTRUCTIONS, trajectory_errors
from mig_data.loading import load_split
from mig_lab.graph import plan
from mig_lab.runner import run
from tests.conftest import REPO, compose_cfg

Q25_STAGES = ("eval_base_q25", "sft_q25", "eval_sft_q25", "rl_q25", "eval_rl_q25")
EXPERIMENTS = ("mirg_rl_full", "mirg_table1", "mirg_table2", "mirg_table3")


def _random_tiny(exp: str) -> list[str]:
    """The random tiny models in place of the tiny bases (same sizes), so these tests do not depend on
    the committed base weights; `test_experiments_compose_as_written` covers the real defaults."""
    out = ["model=tiny_qwen2_vl"]
    if exp == "mirg_table2":
        out += [f"model@stages.{s}.overrides.model=tiny_qwen2_5_vl" for s in Q25_STAGES]
    return out


def _cfg(exp: str, tmp=None, *extra: str):
    return compose_cfg([f"experiment={exp}", "debug=tiny", "logger=csv", *_random_tiny(exp), *extra], tmp)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One stage cache for the module: stages the experiments share are computed once, as for a user."""
    return tmp_path_factory.mktemp("mirg_cache")


def _run(exp: str, cache, tmp_path):
    cfg = _cfg(exp, None, f"paths.cache_dir={cache}")
    cfg.paths.output_dir = str(tmp_path / "run")
    return run(cfg), tmp_path / "run"


def test_experiments_compose_as_written():
    for exp in EXPERIMENTS:
        cfg = compose_cfg([f"experiment={exp}"])
        stages = plan(cfg)
        assert cfg.model.name == "tiny_base"
        if exp == "mirg_table2":
            q25 = {p.name: p.cfg.model for p in stages if p.name in Q25_STAGES}
            assert {m.family for m in q25.values()} == {"qwen2_5_vl"}


def test_mirg_experiments_share_stages_and_use_the_image_aware_reward():
    keys = {exp: {p.name: p for p in plan(compose_cfg([f"experiment={exp}", *_random_tiny(exp)]))}
            for exp in EXPERIMENTS}
    full = keys["mirg_rl_full"]
    for stage in ("data", "traj", "sft", "rl"):  # the grounded-trajectory models are the same in Tables 1, 3
        for exp in ("mirg_table1", "mirg_table3"):
            assert keys[exp][stage].key == full[stage].key, (exp, stage)
    for stage in ("eval_base", "eval_sft", "eval_rl"):  # Table 3 reuses the headline's evaluations too
        assert keys["mirg_table3"][stage].key == full[stage].key
    # Table 2 is the reasoning-only trajectory SFT (its Qwen2-VL rows are Table 3's "Reasoning-only" rows)
    t2, t3 = keys["mirg_table2"], keys["mirg_table3"]
    assert t2["data"].key == full["data"].key and t2["eval_base"].key == full["eval_base"].key
    for ours, table3 in (("traj_reason", "traj_reason"), ("sft", "sft_reason"), ("rl", "rl_reason"),
                         ("eval_sft", "eval_sft_reason"), ("eval_rl", "eval_rl_reason")):
        assert t2[ours].key == t3[table3].key, ours
    # Table 1 is the headline's own evaluation (the whole eval split, 100 per task): a run after it only prints
    assert keys["mirg_table1"]["eval_rl"].key == full["eval_rl"].key
    # Table 3's data ablation: three trajectory forms of the same data
    t3 = keys["mirg_table3"]
    assert [t3[s].cfg.trajectory.form for s in ("traj", "traj_reason", "traj_answer")] == ["grounded", "reasoning",
                                                                                             "answer"]
    assert len({t3[s].key for s in ("sft", "sft_reason", "sft_answer")}) == 3
    # Table 3's image-reward ablation: the same GRPO from the same SFT model, r_img out of the sum
    assert t3["rl_no_image"].inputs == t3["rl"].inputs and t3["rl_no_image"].key != t3["rl"].key
    no_image = {k: v for k, v in t3["rl_no_image"].cfg.rl.rewards.items() if v}
    assert no_image == {"mirg_format": 1.0, "object": 1.0}
    assert t3["rl_no_image"].cfg.rl.rewards.image == 0.0
    # Table 2: the Qwen2.5-VL chain differs in its model only
    assert t2["sft_q25"].cfg.model.family == "qwen2_5_vl" and t2["sft"].cfg.model.family == "qwen2_vl"
    assert t2["sft_q25"].key != t2["sft"].key
    weights = {k: v for k, v in full["rl"].cfg.rl.rewards.items() if v}
    assert weights == {"mirg_format": 1.0, "image": 1.0, "object": 1.0}  # r = r_fmt + r_img + r_obj
    assert full["rl"].cfg.rl.split == "rl"
    # MIRG-RL trains on seven task types and is evaluated on all ten
    synth = full["data"].cfg.data.synth
    assert len(synth.tasks) == 7 and len(synth.eval_tasks) == 10 and "multi_view" not in synth.tasks


def test_table2_trains_every_row_on_reasoning_only_trajectories():
    """mirg_rl.txt 3.3: Table 2 applies "Trajectory SFT using only the reasoning data". What a user inspects
    (`python run.py experiment=mirg_table2 --cfg job`) says so for the SFT stage of every row, and the plan
    agrees (each trajectory-fed SFT and GRPO stage reads reasoning-only trajectories)."""
    out = subprocess.run([sys.executable, "run.py", "experiment=mirg_table2", "--cfg", "job"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    printed = OmegaConf.create(out.stdout)
    trained = {name: st for name, st in printed.stages.items() if st.kind in ("sft", "grpo")
               and printed.stages[st.inputs.data].kind == "make_trajectory_data"}
    assert set(trained) == {"sft", "rl", "sft_q25", "rl_q25"}
    for name, st in trained.items():
        assert printed.stages[st.inputs.data].overrides.trajectory.form == "reasoning", name
    planned = {p.name: p for p in plan(compose_cfg(["experiment=mirg_table2"]))}
    for name, st in trained.items():
        assert planned[st.inputs.data].cfg.trajectory.form == "reasoning", name


def test_mirg_rl_full_runs_in_debug_tiny(cache, tmp_path):
    results, run_dir = _run("mirg_rl_full", cache, tmp_path)
    traj = results["traj"].dir
    stats = json.loads((traj / "stats.json").read_text())
    assert stats["kept"] + stats["rejected_samples"] == stats["samples"] == stats["sft_pool"] > 0
    assert stats["rl_prompts"] > 0 and stats["eval"] == 30  # 3 per task x 10 tasks
    train = load_split(traj, "train")
    assert len(train) == stats["kept"]
    for s in train:
        assert s.question.endswith(INSTRUCTIONS["grounded"]) and not s.need_format
        assert trajectory_errors(s.response, len(s.images)) == []
    rl = load_split(traj, "rl")
    assert all(s.response is None and s.answer is not None for s in rl)
    assert {s.id for s in rl}.isdisjoint({s.id for s in train})  # RL prompts are held out from SFT
    assert {s.task for s in load_split(traj, "eval")} == set(stats["by_task"]) | {"view_diff", "multi_view",
                                                                                   "correspondence"}
    # GRPO logged the three MIRG reward components
    with open(results["rl"].dir / "csv" / "metrics.csv") as f:
        header = next(csv.reader(f))
    assert {"reward/mirg_format", "reward/image", "reward/object", "reward/total"} <= set(header)
    for name in ("eval_base", "eval_sft", "eval_rl"):
        m = json.loads((results[name].dir / "metrics.json").read_text())
        assert m["overall"]["tasks"] == 10 and m["overall"]["n"] == 30
    table = (run_dir / "mirg_rl_table1.md").read_text()
    for row in ("| Qwen2-VL-7B |", "| MIRG-RL-7B |", "**tiny base**", "**MIRG-RL (tiny)**",
                "**+ Trajectory SFT (tiny)**"):
        assert row in table
    # our MIRG-RL row is printed right under the paper's
    lines = table.splitlines()
    assert lines[lines.index(next(x for x in lines if x.startswith("| MIRG-RL-7B |"))) + 1].startswith(
        "| **MIRG-RL (tiny)**")


def _reward_rows(stage_dir) -> list[dict[str, float]]:
    with open(stage_dir / "csv" / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if k.startswith("reward/") and v} for r in csv.DictReader(f)
                if r.get("reward/total")]


@pytest.mark.parametrize("exp", ["mirg_table1", "mirg_table2", "mirg_table3"])  # after mirg_rl_full's test;
# Table 3 after Table 2 (their reasoning-only chain is shared)
def test_mirg_tables_run_in_debug_tiny(exp, cache, tmp_path):
    results, run_dir = _run(exp, cache, tmp_path)
    table_name = {"mirg_table1": "mirg_rl_table1", "mirg_table2": "mirg_rl_table2",
                  "mirg_table3": "mirg_rl_table3"}[exp]
    table = (run_dir / f"{table_name}.md").read_text()
    rows = _cfg(exp).report.rows
    assert all(f"**{label}**" in table for label in rows.values())
    assert set(results["table"].summary) == {"table"}
    if exp == "mirg_table3":
        forms = {name: json.loads((results[name].dir / "stats.json").read_text())["form"]
                 for name in ("traj", "traj_reason", "traj_answer")}
        assert forms == {"traj": "grounded", "traj_reason": "reasoning", "traj_answer": "answer"}
        plain = load_split(results["traj_answer"].dir, "train")
        assert all(s.response.startswith("Image-") and "<think>" not in s.response for s in plain)
        # the image-reward ablation: r_img is logged but left out of the total; the full row sums all three
        for stage, parts in (("rl_no_image", ("mirg_format", "object")), ("rl", ("mirg_format", "image", "object"))):
            rows = _reward_rows(results[stage].dir)
            assert rows and all("reward/image" in r for r in rows), stage
            for r in rows:
                assert r["reward/total"] == pytest.approx(sum(r[f"reward/{p}"] for p in parts), abs=1e-4), stage
        lines = table.splitlines()
        under = lines.index(next(x for x in lines if x.startswith("| + + Reasoning and Grounding RL |")))
        assert "without the image reward" in lines[under + 2]  # ours: with r_img, then without it
    if exp == "mirg_table2":
        m = json.loads((results["eval_rl_q25"].dir / "metrics.json").read_text())
        assert m["eval"]["family"] == "qwen2_5_vl" and m["eval"]["convention"] == "qwen2_5_vl"


def test_a_teacher_that_writes_no_valid_trajectory_stops_the_data_stage(tmp_path):
    """cot.teacher.kind=model with an untrained VLM: stage 1 marks no mentions, every sample is rejected
    (`no_draft`), and the stage says so instead of handing SFT an empty split."""
    from mig_data.schema import DataError
    from mig_models.builders import build_tiny, save_model

    model, processor = build_tiny(compose_cfg([]).model, seed=0)
    save_model(model, processor, tmp_path / "teacher")
    cfg = _cfg("mirg_rl_full", tmp_path, "cot.teacher.kind=model", f"cot.teacher.model_path={tmp_path / 'teacher'}",
               "cot.teacher.max_new_tokens=8", "data.synth.n_train=4")
    with pytest.raises(DataError, match=r"model teacher wrote no valid grounded trajectory .*'no_draft'"):
        run(cfg)
