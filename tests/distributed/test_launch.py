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
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "config.json").write_text("{}")  # model.path is checked at planning too
    assert proc.returncode != 0 and "config key 'fabric.devices' is 64" in proc.stderr, proc.stderr[-2000:]
    cases = {
        ("fabric.strategy=ddp_spawn",): "fabric.strategy",
        ("fabric.strategy=deepspeed_zero3",): "needs CUDA",
        ("fabric.accelerator=cuda",): "no CUDA device",
        ("fabric.precision=bf16-true",): "master weights",
        ("model=qwen2_vl_2b", "model.dtype=bfloat16", f"model.path={tmp_path / 'weights'}"): "master weights",
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


def test_two_tasks_started_as_srun_starts_them_run_one_job(tmp_path):
    """The variables `srun --ntasks-per-node=2` gives its tasks (no SLURM needed to set them): each task runs
    `python run.py`; the task with SLURM_PROCID=0 plans, the other serves it (no Hydra, no run folder)."""
    import socket
    import subprocess
    import sys

    from tests.distributed.helpers import RUN_PY, TIMEOUT, env

    cwd = fresh(tmp_path / "slurm")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    slurm = {"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1",
             "SLURM_STEP_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "mig",
             "SLURM_NODELIST": "localhost", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    procs = [subprocess.Popen([sys.executable, RUN_PY, "logger=csv", *SMOKE], cwd=cwd, text=True,
                              env={**env(), **slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in (0, 1)]
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    _check_written_once(cwd, outs[0])
