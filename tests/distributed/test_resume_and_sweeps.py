"""Killed and resumed with 2 ranks; a sweep of K points as K jobs of 2 ranks each (submitit's local
launcher), sharing the stages the points have in common."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import torch
from safetensors.torch import load_file

from tests.distributed.helpers import RUN_PY, env, fresh, run_py, stages

SMOKE2 = ("experiment=smoke", "debug=tiny", "fabric=cpu", "fabric.devices=2", "fabric.strategy=ddp",
          "debug.max_steps=8", "train.ckpt_every=2")


def test_a_two_rank_run_killed_mid_training_resumes_to_the_unbroken_result(tmp_path):
    straight, killed = fresh(tmp_path / "straight"), fresh(tmp_path / "killed")
    run_py(straight, *SMOKE2)
    proc = subprocess.Popen([sys.executable, RUN_PY, "logger=csv", *SMOKE2], cwd=killed, env=env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, step = time.time() + 240, ""
    while time.time() < deadline and not step:
        for latest in (killed / "outputs" / "cache").glob("sft-*/checkpoints/latest"):
            step = latest.read_text().strip()
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9, both ranks
    proc.wait()
    sft_dirs = list((killed / "outputs" / "cache").glob("sft-*"))
    assert step and len(sft_dirs) == 1 and not (sft_dirs[0] / "done.json").exists(), f"killed at {step}"
    out = run_py(killed, *SMOKE2)
    assert "resumed from" in out.stdout + out.stderr
    run = sorted((killed / "outputs" / "runs" / "smoke").iterdir())[-1]
    a = load_file(next((straight / "outputs" / "cache").glob("sft-*/model/model.safetensors")))
    b = load_file(stages(run)["sft"]["dir"] + "/model/model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed bit for bit"


def test_a_sweep_on_submitit_local_is_k_jobs_of_two_ranks_that_share_stages(tmp_path):
    cwd = fresh(tmp_path / "sweep")
    out = run_py(cwd, "experiment=coldstart_rl_full", "debug=tiny", "fabric=cpu", "fabric.devices=2",
                 "rl.kl_beta=0,0.01", "hydra/launcher=local", multirun=True)
    sweeps = list((cwd / "outputs" / "multirun" / "coldstart_rl_full").iterdir())
    assert len(sweeps) == 1, "one sweep, not one per rank"
    jobs = sorted(p for p in sweeps[0].iterdir() if (p / "stages.json").exists())
    assert len(jobs) == 2, (jobs, out.stdout[-2000:])
    for job in jobs:
        assert json.loads((job / "run.json").read_text())["world_size"] == 2
    kinds = Counter(p.name.split("-")[0] for p in (cwd / "outputs" / "cache").iterdir() if p.name[0] != ".")
    assert kinds["sft"] == 1 and kinds["rejection_sample"] == 1, kinds  # computed once for both points
    assert kinds["grpo"] == 2 and kinds["evaluate"] == 2, kinds
