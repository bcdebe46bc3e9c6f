"""Every method under DDP with 2 gloo ranks: the test process is rank 0 (`run()` starts the worker rank,
as `python run.py fabric.devices=2` does), so each stage's records can be compared with one process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mig_lab.config import StageSpec
from mig_lab.fabric import make_fabric
from mig_lab.graph import StageContext, StageResult, plan
from mig_lab.runner import run
from mig_rl.checkpoint import latest_checkpoint, load_checkpoint
from mig_rl.sft import build_trainable
from tests.conftest import compose_cfg

DDP = ["logger=csv", "fabric=cpu", "fabric.devices=2", "fabric.strategy=ddp"]
GRPO = ["model=tiny_base", "data.synth.tasks=[single_grounding]", "data.synth.min_objects=2",
        "data.synth.max_objects=4", "data.synth.n_train=16", "data.synth.n_eval=4", "train.mode=full",
        "rl.max_steps=3", "rl.batch_size=4", "rl.num_generations=4", "rl.temperature=1.0", "rl.max_new_tokens=24",
        "rl.lr=2e-4", "rl.kl_beta=0.04", "rl.rewards={iou: 1.0, format: 0.0}", "rl.ckpt_every=100",
        "name=grpo_ddp"]


def _grpo_job(tmp: Path, *overrides: str):
    cfg = compose_cfg([*GRPO, *overrides], tmp)
    cfg.stages = {"data": StageSpec(kind="make_data"), "grpo": StageSpec(kind="grpo", inputs={"data": "data"})}
    return run(cfg)


def test_grpo_full_with_kl_trains_under_ddp_like_one_process(tmp_path):
    """The frozen reference is not wrapped in DDP (it used to crash); rewards and KL are over both ranks'
    rollouts; the first step, whose rollouts are the same prompts with the same seeds, matches one process
    accumulating the same two micro-batches. The 2-rank checkpoint refuses to resume in one process."""
    job = _grpo_job(tmp_path / "two", *DDP)
    two = job["grpo"].summary
    ckpt = latest_checkpoint(job["grpo"].dir / "checkpoints")
    cfg = compose_cfg([*GRPO, "logger=csv", "fabric=cpu"], tmp_path / "resume")
    model, _ = build_trainable(cfg, None, lora=False)
    fabric = make_fabric(cfg)
    model = fabric.setup_module(model)
    state = {"model": model, "optimizer": fabric.setup_optimizers(torch.optim.AdamW(model.parameters())),
             "scheduler": None, "step": 0, "micro_batches": 0}
    with pytest.raises(RuntimeError, match="2 rank"):
        load_checkpoint(fabric, ckpt, {k: v for k, v in state.items() if v is not None})
    one = _grpo_job(tmp_path / "one", "logger=csv", "fabric=cpu", "rl.micro_batch_size=2")["grpo"].summary
    assert two["reference"] == "frozen_copy" and two["steps"] == 3
    assert two["reward_curve"][0] == pytest.approx(one["reward_curve"][0], abs=1e-6)
    assert two["kl_curve"][0] == pytest.approx(0.0, abs=1e-7)  # policy == reference before the first update
    assert two["kl_curve"][1] > 0 and one["kl_curve"][1] > 0, "a real update happened (non-zero rewards)"
    assert two["kl_curve"][1] == pytest.approx(one["kl_curve"][1], rel=1e-3)


def _one_process(cfg, st: dict, name: str, out: Path):
    """Run stage `name` of the planned experiment in this process alone, on the 2-rank run's inputs."""
    p = {s.name: s for s in plan(cfg)}[name]
    inputs = {role: StageResult(src, "", "", Path(st[src]["dir"])) for role, src in p.inputs.items()}
    out.mkdir(parents=True)
    ctx = StageContext(name=name, kind=p.kind.name, key=p.key, cfg=p.cfg, inputs=inputs, out_dir=out,
                       run_dir=out, group="one")
    return p.kind.fn(ctx)


def test_coldstart_pipeline_under_ddp_and_sharded_sampling_equals_one_process(tmp_path):
    """LoRA CoT-SFT -> merged export -> rejection sampling (sharded) -> GRPO -> evaluation (sharded), all on
    2 ranks; rejection sampling and evaluation give exactly what one process gives from the same model."""
    over = ["experiment=coldstart_rl_full", "debug=tiny", "rl.kl_beta=0.04"]
    results = run(compose_cfg([*over, *DDP], tmp_path / "ddp"))
    st = {n: {"dir": str(r.dir)} for n, r in results.items()}
    assert (Path(st["sft_lora"]["dir"]) / "adapter" / "adapter_config.json").exists()
    assert (Path(st["sft_lora"]["dir"]) / "model" / "model.safetensors").exists()  # LoRA merged on export
    assert results["grpo_full"].summary["reference"] == "frozen_copy"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two ranks ran
    try:
        cfg = compose_cfg([*over, "logger=csv", "fabric=cpu"], tmp_path / "one")
        stats = _one_process(cfg, st, "rs", tmp_path / "one" / "rs")
        _one_process(cfg, st, "eval_full", tmp_path / "one" / "eval")
    finally:
        torch.set_num_threads(threads)
    rs_dir = Path(st["rs"]["dir"])
    assert json.loads((rs_dir / "stats.json").read_text()) == stats

    def kept(d):
        return [(r["task"], r["question"], r["answer"]) for r in json.loads((Path(d) / "rl.json").read_text())]

    assert kept(rs_dir) == kept(tmp_path / "one" / "rs")

    def preds(d):
        return [json.loads(line) for line in (Path(d) / "predictions.jsonl").read_text().splitlines()]

    assert preds(st["eval_full"]["dir"]) == preds(tmp_path / "one" / "eval")
    assert json.loads((Path(st["eval_full"]["dir"]) / "metrics.json").read_text()) == \
        json.loads((tmp_path / "one" / "eval" / "metrics.json").read_text())
