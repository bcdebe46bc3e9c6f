"""A job with 2 gloo ranks on CPU, started the ways a cluster user starts one: `python run.py
fabric.devices=2` (the runner starts the worker rank) and `torchrun --nproc_per_node=2 run.py`.
Either way rank 0 alone plans and writes the records, once, and both give the same stages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from mig_lab.config import ConfigError
from mig_lab.runner import run
from tests.conftest import compose_cfg
from tests.distributed.helpers import fresh, run_folders, run_py, stages, torchrun

SMOKE = ("experiment=smoke", "debug=tiny", "fabric=cpu", "fabric.strategy=ddp")


def _check_written_once(cwd: Path, out: str) -> dict:
    runs = run_folders(cwd, "smoke")
    assert len(runs) == 1, f"one run folder, not one per rank: {runs}"
    assert not (cwd / "multirun").exists()
    assert json.loads((runs[0] / "run.json").read_text())["world_size"] == 2
    assert out.count("experiment smoke finished on 2 rank(s)") == 1
    st = stages(runs[0])
    sft = Path(st["sft"]["dir"])
    assert sorted(p.name for p in (sft / "checkpoints").iterdir()) == ["latest", "step-0000003"]
    assert not list(sft.rglob("*.tmp"))
    with open(sft / "csv" / "metrics.csv") as f:
        steps = [row["step"] for row in csv.DictReader(f)]
    assert steps == sorted(set(steps)), f"each logged step once (rank 0 alone logs): {steps}"
    for name in ("eval_base", "eval_sft"):
        ev = Path(st[name]["dir"])
        assert not list(ev.glob("predictions.rank*.jsonl")), "part files are merged and removed"
        lines = (ev / "predictions.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)["index"] for line in lines) == [0, 1, 2]
    return {k: v["key"] for k, v in st.items()}


def test_local_launch_and_torchrun_run_the_job_once_with_the_same_stages(tmp_path):
    local, elastic = fresh(tmp_path / "local"), fresh(tmp_path / "torchrun")
    a = run_py(local, *SMOKE, "fabric.devices=2")
    b = run_py(elastic, *SMOKE, launcher=torchrun())  # fabric.devices comes from the launcher
    keys_a = _check_written_once(local, a.stdout + a.stderr)
    keys_b = _check_written_once(elastic, b.stdout + b.stderr)
    assert keys_a == keys_b


def test_bad_fabric_settings_fail_before_any_work(tmp_path):
    proc = run_py(fresh(tmp_path / "cli"), *SMOKE, "fabric.devices=64", check=False)
    assert proc.returncode != 0 and "config key 'fabric.devices' is 64" in proc.stderr, proc.stderr[-2000:]
    cases = {
        ("fabric.strategy=ddp_spawn",): "fabric.strategy",
        ("fabric.strategy=deepspeed_zero3",): "needs CUDA",
        ("fabric.accelerator=cuda",): "no CUDA device",
        ("fabric.precision=bf16-true",): "master weights",
        ("model=qwen2_vl_2b", "model.dtype=bfloat16", "model.path=/nonexistent"): "master weights",
        ("fabric.devices=2", "debug.batch_size=3"): "train.batch_size",
    }
    for extra, expected in cases.items():
        with pytest.raises(ConfigError, match=expected):
            run(compose_cfg([*SMOKE, "logger=csv", *extra], tmp_path / "in"))
    assert not (tmp_path / "in" / "cache").exists(), "nothing ran"


def test_a_launcher_whose_plugin_is_missing_is_named(tmp_path):
    proc = run_py(fresh(tmp_path / "x"), *SMOKE, "hydra/launcher=ray", multirun=True, check=False)
    assert proc.returncode != 0
    assert "hydra/launcher=ray needs the hydra-ray-launcher package" in proc.stderr, proc.stderr[-2000:]
