"""The cold-start RL experiments (coldstart_rl.txt) end to end in debug=tiny: Table 9's six rows with
their shared stages computed once, the KL-beta sweep as a Hydra multirun, and the CoT-SFT experiment."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from mig_lab.graph import plan
from mig_lab.runner import run
from tests.conftest import REPO, compose_cfg

TABLE9_ROWS = ["base (tiny)", "w/o CS (tiny)", "CoT-SFT Full (tiny)", "CoT-SFT LoRA (tiny)", "w/o RS (tiny)",
               "Ours-Full (tiny)"]


def test_table9_runs_end_to_end_and_shares_the_cold_start_model(tmp_path):
    results = run(compose_cfg(["experiment=coldstart_table9", "debug=tiny", "logger=csv"], tmp_path))
    # one LoRA CoT-SFT model feeds rejection sampling, RL without RS and the full method
    sft_dir = str(results["sft_lora"].dir)
    for name in ("rs", "grpo_nors", "grpo_full"):
        done = json.loads((results[name].dir / "done.json").read_text())
        assert done["inputs"]["model"] == sft_dir, name
    # the full method trains on the rejection-sampled prompts, the ablation on the plain RL split
    assert json.loads((results["grpo_full"].dir / "done.json").read_text())["inputs"]["data"] == str(results["rs"].dir)
    assert json.loads((results["grpo_nors"].dir / "done.json").read_text())["inputs"]["data"] == str(
        results["cot_data"].dir)
    rs = json.loads((results["rs"].dir / "done.json").read_text())["summary"]
    assert rs["kept"] + rs["all_right"] + rs["all_wrong"] == rs["prompts"] or rs.get("fallback") == "keep_all"
    table = (tmp_path / "run" / "coldstart_rl_table9.md").read_text()
    assert all(f"**{row}**" in table for row in TABLE9_ROWS)
    assert "| Ours-Full |" in table and "| w/o RS |" in table  # the paper's rows beside ours
    # ours take the CS RS RL flags of the paper row they sit under (the same recipe)
    assert "| **Ours-Full (tiny)** | **✓ ✓ ✓** |" in table and "| **w/o CS (tiny)** | **✗ ✗ ✓** |" in table
    for name in ("eval_base", "eval_nocs", "eval_sft_full", "eval_sft_lora", "eval_nors", "eval_full"):
        m = json.loads((results[name].dir / "metrics.json").read_text())
        assert m["overall"]["tasks"] == 10, name


def test_kl_beta_sweep_is_a_multirun_that_computes_shared_stages_once(tmp_path):
    """`python run.py -m experiment=coldstart_rl_full rl.kl_beta=...`: one job per beta; data, CoT data,
    CoT-SFT and rejection sampling run in the first job and are reused by the second."""
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=coldstart_rl_full", "rl.kl_beta=0,1e-3", "debug=tiny",
         "logger=csv", f"paths.cache_dir={tmp_path}/cache", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for shared in ("data", "cot_data", "sft_lora", "rs"):
        assert len(re.findall(rf"\[stage {shared}\] running", out)) == 1, shared
        assert len(re.findall(rf"\[stage {shared}\] reusing cached", out)) == 1, shared
    assert len(re.findall(r"\[stage grpo_full\] running", out)) == 2  # one GRPO per beta
    jobs = sorted(p.parent for p in (tmp_path / "sweep").rglob("run.json"))
    assert [j.name for j in jobs] == ["0_rl.kl_beta=0", "1_rl.kl_beta=0.001"]  # named by the swept key only
    betas = sorted(json.loads((j / "run.json").read_text())["config"]["rl"]["kl_beta"] for j in jobs)
    assert betas == [0.0, 1e-3]
    for j in jobs:
        assert (j / "coldstart_rl_table9.md").exists()


@pytest.mark.parametrize("extra, mode", [([], "lora"), (["train=full"], "full")])
def test_cot_sft_experiment_is_lora_by_default_and_full_on_request(extra, mode):
    cfg = compose_cfg(["experiment=coldstart_cot_sft", *extra])
    assert cfg.train.mode == mode and cfg.train.freeze_vision
    stages = {p.name: p for p in plan(cfg)}
    table9 = {p.name: p for p in plan(compose_cfg(["experiment=coldstart_table9"]))}
    if mode == "lora":  # the same stage (and cache entry) as Table 9's CoT-SFT LoRA row
        assert stages["sft"].key == table9["sft_lora"].key
    assert stages["cot_data"].key == table9["cot_data"].key


def test_every_coldstart_experiment_starts_from_the_tiny_base():
    for exp in ("coldstart_cot_sft", "coldstart_rl_full", "coldstart_table2", "coldstart_table3", "coldstart_table9",
                "coldstart_table10"):
        cfg = compose_cfg([f"experiment={exp}"])
        assert cfg.model.name == "tiny_base", exp
        assert cfg.rl.rewards == {"iou": 1.0, "format": 0.5} or exp == "coldstart_cot_sft", exp


def test_sft_baseline_trains_on_the_cot_sft_samples_with_direct_answers(tmp_path):
    """coldstart_rl.txt 4.2: the SFT baseline is "trained on the same dataset as our stage-1 CoT-SFT": the
    samples the consistency filter kept (never the RL hold-out), with their direct answers and plain prompts."""
    from mig_data.cot.coldstart import COT_INSTRUCTION
    from mig_data.loading import load_split

    results = run(compose_cfg(["experiment=coldstart_table2", "debug=tiny", "logger=csv"], tmp_path))
    cot = results["cot_data"].dir
    cot_sft, direct, rl = (load_split(cot, s) for s in ("train", "direct", "rl"))
    assert direct and [s.id for s in direct] == [s.id for s in cot_sft]
    assert {s.id for s in direct}.isdisjoint({s.id for s in rl})
    for plain, reasoned in zip(direct, cot_sft):
        assert plain.response is None and plain.answer == reasoned.answer  # trained on the answer box alone
        assert not plain.question.endswith(COT_INSTRUCTION) and reasoned.question.endswith(COT_INSTRUCTION)
    done = json.loads((results["sft_plain"].dir / "done.json").read_text())
    assert done["inputs"]["data"] == str(cot)
    assert (done["summary"]["split"], done["summary"]["samples"]) == ("direct", len(direct))
    table = (tmp_path / "run" / "coldstart_rl_table2.md").read_text()
    assert "**+ SFT (tiny)**" in table and "**Ours (tiny)**" in table
