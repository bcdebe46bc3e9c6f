"""The experiment runner end to end: `run.py experiment=smoke debug=tiny`, stage caching, W&B offline."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

from mig_lab.runner import run
from tests.conftest import REPO, compose_cfg


def test_smoke_runs_and_second_run_reuses_every_stage(tmp_path, caplog):
    cfg = compose_cfg(["experiment=smoke", "debug=tiny", "logger=csv"], tmp_path)
    first = run(cfg)
    assert not any(r.cached for r in first.values() if r.kind != "report")
    for name in ("eval_base", "eval_sft"):
        metrics = json.loads((first[name].dir / "metrics.json").read_text())
        overall = metrics["overall"]
        assert {"acc@0.5", "miou", "well_formed", "n"} <= overall.keys()
        assert overall["n"] == 3
    assert (first["sft"].dir / "model" / "model.safetensors").exists()
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["seed"] == 0 and run_json["git_sha"] and run_json["config"]["name"] == "smoke"
    table = (tmp_path / "run" / "table.md").read_text()
    assert "| base |" in table and "| sft |" in table
    # each row against the one before it, paired on the same eval samples (mig_eval.bootstrap)
    diffs = json.loads((first["table"].dir / "differences.json").read_text())
    assert [(d["a"], d["b"], d["n"]) for d in diffs] == [("base", "sft", 3)] and "| base | sft |" in table

    caplog.clear()
    caplog.set_level(logging.INFO, logger="mig_lab")
    second = run(compose_cfg(["experiment=smoke", "debug=tiny", "logger=csv"], tmp_path))
    assert all(r.cached for r in second.values() if r.kind != "report")
    assert all(second[n].dir == first[n].dir for n in ("data", "sft", "eval_sft"))
    assert sum("reusing cached" in rec.getMessage() for rec in caplog.records) == 4


def test_interrupted_evaluation_resumes(tmp_path):
    cfg = compose_cfg(["experiment=smoke", "debug=tiny", "logger=csv"], tmp_path)
    results = run(cfg)
    eval_dir = results["eval_base"].dir
    preds = (eval_dir / "predictions.jsonl").read_text().splitlines()
    # simulate a kill after the first prediction (plus a torn line), then rerun the stage
    (eval_dir / "predictions.jsonl").write_text(preds[0] + "\n" + preds[1][:10])
    (eval_dir / "done.json").unlink()
    again = run(cfg)
    lines = (again["eval_base"].dir / "predictions.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines if line.endswith("}")]
    assert sorted(r["index"] for r in recs) == [0, 1, 2]
    assert [json.loads(p)["response"] for p in preds] == [r["response"] for r in sorted(recs, key=lambda r: r["index"])]


def test_wandb_offline_run_is_written(tmp_path):
    import os

    env_mode = os.environ.pop("WANDB_MODE", None)
    try:
        cfg = compose_cfg(["experiment=smoke", "debug=tiny", "logger=wandb"], tmp_path)
        results = run(cfg)
    finally:
        if env_mode is not None:
            os.environ["WANDB_MODE"] = env_mode
    runs = list((results["sft"].dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "W&B must fall back to offline mode without an API key"
    assert list(runs[0].glob("*.wandb"))


def test_run_py_cli_end_to_end(tmp_path):
    """The README's entry point, as a user runs it (debug-sized)."""
    proc = subprocess.run(
        [sys.executable, "run.py", "experiment=smoke", "debug=tiny", "logger=csv",
         f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={tmp_path}/run"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "experiment smoke finished" in proc.stderr + proc.stdout
    assert (Path(tmp_path) / "run" / "table.md").exists()
    assert (Path(tmp_path) / "run" / ".hydra" / "config.yaml").exists()


def test_same_command_gives_the_same_metrics_exactly(tmp_path):
    """run.threads pins torch's thread count (here 2, the default), so two runs of one debug experiment in
    fresh caches agree to the last bit; another thread count is another cache key, and the caller's
    thread count is restored after the job."""
    import torch

    before = torch.get_num_threads()
    metrics = []
    for k in range(2):
        cfg = compose_cfg(["experiment=smoke", "debug=tiny", "logger=csv"], tmp_path / f"try{k}")
        results = run(cfg)
        assert json.loads((tmp_path / f"try{k}" / "run" / "run.json").read_text())["torch_threads"] == 2
        metrics.append({n: (results[n].dir / "metrics.json").read_text() for n in ("eval_base", "eval_sft")})
        assert torch.get_num_threads() == before
    assert metrics[0] == metrics[1]
    one = compose_cfg(["experiment=smoke", "debug=tiny", "logger=csv", "run.threads=1"], tmp_path / "try0")
    from mig_lab.graph import plan

    keys = {p.name: p.key for p in plan(one)}
    assert keys["sft"] != results["sft"].dir.name.split("-")[-1] and keys["data"] == results["data"].dir.name.split("-")[-1]
