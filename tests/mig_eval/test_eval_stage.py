"""`experiment=eval_migbench` end to end (all ten MIG-Synth tasks, paper table, galleries in the stage
folder and in W&B offline), and batching that never changes a prediction, for both model families."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from mig_data.loading import load_split
from mig_data.schema import MIG_TASKS
from mig_eval.evaluate import evaluate_samples
from mig_eval.gallery import GT_COLOR
from mig_lab.config import ConfigError
from mig_lab.runner import run
from mig_models.builders import build_model
from tests.conftest import compose_cfg


def test_eval_migbench_writes_table_metrics_and_galleries(tmp_path):
    env_mode = os.environ.pop("WANDB_MODE", None)  # the logger must pick offline mode by itself
    try:
        cfg = compose_cfg(["experiment=eval_migbench", "debug=tiny", "logger=wandb", "eval.gallery_per_task=1",
                           "eval.max_samples=1"], tmp_path)
        results = run(cfg)
    finally:
        if env_mode is not None:
            os.environ["WANDB_MODE"] = env_mode
    eval_dir = results["eval"].dir
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert set(metrics["tasks"]) == set(MIG_TASKS)
    assert all(m["n"] == 1 for m in metrics["tasks"].values())
    assert set(metrics["groups"]) == {"spontaneous", "referential", "in_domain", "out_of_domain"}
    assert sum(m["n"] for m in metrics["tiers"].values()) == len(MIG_TASKS)
    assert metrics["eval"] == {"model": "tiny_qwen2_vl", "family": "qwen2_vl", "answer_form": "polling", "cot": "none",
                               "convention": "qwen2_vl", "migician_y_rescale": False, "split": "eval"}
    table = (tmp_path / "run" / "migician_table1.md").read_text()
    assert "| Migician | 65.15 |" in table and "| **tiny_qwen2_vl** |" in table
    assert (tmp_path / "run" / "table.md").read_text() == table
    galleries = sorted(p.name for p in (eval_dir / "gallery").glob("*.png"))
    assert galleries == sorted(f"{t}_0.png" for t in MIG_TASKS)
    for name in galleries:
        colors = Image.open(eval_dir / "gallery" / name).convert("RGB").getcolors(1 << 20)
        assert any(c == GT_COLOR for _, c in colors), f"{name}: no ground-truth box drawn"
    logged = list((eval_dir / "wandb").glob("offline-run-*/files/media/images/**/*.png"))
    assert len(logged) == len(MIG_TASKS)


def test_report_rejects_rows_for_unknown_inputs(tmp_path):
    cfg = compose_cfg(["experiment=eval_migbench", "debug=tiny", "logger=csv", "data.synth.tasks=[diff]",
                       "+report.beside={sft: Migician}"], tmp_path)
    with pytest.raises(ConfigError, match=r"input roles \['sft'\]"):
        run(cfg)


@pytest.mark.parametrize("model", ["tiny_qwen2_vl", "tiny_qwen2_5_vl"])
def test_batching_does_not_change_predictions(tmp_path, model):
    from mig_data.synth.generate import generate_split

    cfg = compose_cfg([f"model={model}", "data.synth.tasks=[group_grounding,region,object_tracking]",
                       "data.synth.n_train=0", "data.synth.n_eval=2", "eval.max_new_tokens=8"])
    generate_split(cfg.data.synth, seed=0, split="eval", out_dir=tmp_path / "data")
    samples = load_split(tmp_path / "data", "eval")
    net, processor = build_model(cfg.model, seed=0)
    e = cfg.eval.copy()
    e.batch_size = 1
    one = evaluate_samples(net, processor, cfg.model.family, samples, e, tmp_path / "one.jsonl")
    e.batch_size = 4
    batched = evaluate_samples(net, processor, cfg.model.family, samples, e, tmp_path / "batched.jsonl")
    assert [p["response"] for p in one] == [p["response"] for p in batched]
    assert one == batched


@pytest.mark.parametrize("experiment", ["eval_migbench", "eval_answer_forms", "eval_cot"])
def test_eval_experiments_plan_and_name_real_paper_rows(tmp_path, experiment):
    from mig_eval.tables import table_rows
    from mig_lab.graph import plan

    cfg = compose_cfg([f"experiment={experiment}", "debug=tiny", "logger=csv"], tmp_path)
    stages = {p.name: p for p in plan(cfg)}
    evals = [p for p in stages.values() if p.kind.name == "evaluate"]
    assert len({p.key for p in evals}) == len(evals)  # each variant is its own cached stage
    report = cfg.report
    labels = dict(report.get("rows") or {})
    beside = {labels.get(role, role): row for role, row in (report.get("beside") or {}).items()}
    table_rows(report.table, {}, beside)  # raises if a paper row name is wrong
