"""kill -9 at random points of a real `run.py` process, then the same command again, until it finishes: the
SFT model is bit-identical to an unbroken run's and its metrics.csv equals the unbroken run's row for row
(marker `reliability`: `make test-reliability`)."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.distributed.helpers import RUN_PY, TIMEOUT, env

STEPS = 12
COMMAND = ["experiment=smoke", "debug=tiny", "logger=csv", "fabric=cpu", f"debug.max_steps={STEPS}",
           "train.ckpt_every=2", "train.log_every=1"]


def _start(cwd: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, RUN_PY, *COMMAND, f"paths.cache_dir={cache}"], cwd=cwd, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _sft_dir(cache: Path) -> Path | None:
    found = sorted(cache.glob("sft-*"))
    return found[0] if found else None


def _rows(stage: Path) -> list[dict]:
    with open(stage / "csv" / "metrics.csv") as f:
        return [{k: v for k, v in r.items() if not k.endswith("_per_s")} for r in csv.DictReader(f)]


def _logged_steps(cache: Path) -> int:
    stage = _sft_dir(cache)
    path = stage / "csv" / "metrics.csv" if stage else None
    return max(0, len(path.read_text().splitlines()) - 1) if path and path.exists() else 0


@pytest.mark.slow
@pytest.mark.reliability
def test_kill_9_at_five_random_points_of_sft_resumes_bit_identical(tmp_path):
    whole = _start(tmp_path, tmp_path / "whole")
    assert whole.wait(timeout=TIMEOUT) == 0
    points = sorted(random.Random(17).sample(range(1, STEPS), 5))  # kill once this many steps are logged
    kills = 0
    for point in points:
        proc = _start(tmp_path, tmp_path / "killed")
        deadline = time.time() + TIMEOUT
        while proc.poll() is None and _logged_steps(tmp_path / "killed") < point and time.time() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
    assert kills >= 3, "the kills must land inside the run"
    last = _start(tmp_path, tmp_path / "killed")
    assert last.wait(timeout=TIMEOUT) == 0
    a, b = _sft_dir(tmp_path / "whole"), _sft_dir(tmp_path / "killed")
    assert a.name == b.name  # the same stage
    wa, wb = load_file(a / "model" / "model.safetensors"), load_file(b / "model" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert _rows(b) == _rows(a) and len(_rows(a)) == STEPS
