"""Every run gets its own folder: the start time to the second plus a short unique suffix (the SLURM job id
when there is one), so two runs started at once never interleave logs or overwrite each other's records."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mig_lab.config import run_suffix
from tests.conftest import REPO
from tests.distributed.helpers import RUN_PY, TIMEOUT, env, run_folders


def _run_dir() -> str:
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "conf")):
        cfg = compose(config_name="config", overrides=["experiment=smoke"], return_hydra_config=True)
    return OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]


def test_two_runs_composed_in_the_same_second_get_two_folders(monkeypatch):
    a, b = _run_dir(), _run_dir()
    assert a != b and a.rsplit("_", 1)[0].startswith("outputs/runs/smoke/")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert run_suffix().startswith("4242-") and len(run_suffix()) == len("4242-") + 6


@pytest.mark.reliability  # ~15 s: also in make test
def test_two_runs_started_at_once_on_one_cache_keep_their_own_folders(tmp_path):
    cmd = [sys.executable, RUN_PY, "experiment=smoke", "debug=tiny", "logger=csv", "fabric=cpu",
           f"paths.cache_dir={tmp_path / 'cache'}"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    folders = run_folders(tmp_path, "smoke")
    assert len(folders) == 2
    for folder in folders:
        assert json.loads((folder / "run.json").read_text())["experiment"] == "smoke"
        assert set(json.loads((folder / "stages.json").read_text())) >= {"data", "sft"}
    # one cache: each stage computed once (the other run waited on its lock, then reused it)
    ran = [line for out in outs for line in out.splitlines() if "[stage sft] running" in line]
    assert len(ran) == 1, outs
