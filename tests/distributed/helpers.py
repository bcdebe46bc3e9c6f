"""Starting `run.py` the three ways a cluster user does, with 2 gloo ranks on CPU (debug-sized)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

RUN_PY = str(REPO / "run.py")
TIMEOUT = 300  # seconds: a hang fails the test instead of the suite


def env() -> dict[str, str]:
    e = {**os.environ, "PYTHONFAULTHANDLER": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS"):
        e.pop(k, None)
    return e


def run_py(cwd: Path, *overrides: str, launcher: tuple[str, ...] = (sys.executable,), multirun: bool = False,
           check: bool = True, **popen) -> subprocess.CompletedProcess:
    """`<launcher> run.py [-m] <overrides>` in `cwd` (outputs/ lands there), CSV logging."""
    cmd = [*launcher, RUN_PY, *(["-m"] if multirun else []), "logger=csv", *overrides]
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=TIMEOUT, **popen)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def torchrun() -> tuple[str, ...]:
    return (str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2")


def run_folders(cwd: Path, name: str) -> list[Path]:
    return sorted(p for p in (cwd / "outputs" / "runs" / name).glob("*") if p.is_dir())


def stages(run_dir: Path) -> dict:
    return json.loads((run_dir / "stages.json").read_text())


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
