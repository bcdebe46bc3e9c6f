"""kill -9 at 20 random moments while a process writes checkpoints back to back: after every kill the latest
checkpoint loads (weights-only) whole, with the state of the step it is named after; never a torn file, never a
pointer to a missing folder (marker `reliability`)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from lightning.fabric import Fabric

from mig_rl.checkpoint import latest_checkpoint, load_checkpoint

WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from lightning.fabric import Fabric
    from mig_rl.checkpoint import save_checkpoint
    fabric = Fabric(accelerator="cpu", devices=1)
    root = Path(sys.argv[1])
    model = torch.nn.Linear(256, 256)
    opt = torch.optim.AdamW(model.parameters())
    latest = root / "latest"
    step = int(latest.read_text().split("-")[1]) if latest.exists() else 0  # resume numbering, as a run does
    while True:
        step += 1
        with torch.no_grad():
            model.weight.fill_(step)  # the state says which step wrote it
        save_checkpoint(fabric, root, step, {"model": model, "optimizer": opt, "step": step}, {"seed": 0})
""")


def _state():
    model = torch.nn.Linear(256, 256)
    return {"model": model, "optimizer": torch.optim.AdamW(model.parameters()), "step": 0}


@pytest.mark.slow
@pytest.mark.reliability
def test_twenty_kills_inside_checkpoint_writes_never_leave_a_broken_latest(tmp_path):
    root = tmp_path / "ckpt"
    fabric = Fabric(accelerator="cpu", devices=1)
    rng = random.Random(3)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    seen = []
    for _ in range(20):
        before = (root / "latest").read_text() if (root / "latest").exists() else None
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while proc.poll() is None and time.time() < deadline and (
                not (root / "latest").exists() or (root / "latest").read_text() == before):
            time.sleep(0.01)  # until this process has written its first checkpoint
        assert proc.poll() is None, "the writer died on its own"
        time.sleep(rng.random() * 0.3)  # then somewhere among its writes (each takes ~10 ms)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        latest = latest_checkpoint(root)
        if latest is None:
            continue
        state = _state()
        load_checkpoint(fabric, latest, state)
        step = int(latest.name.split("-")[1])
        assert state["step"] == step and torch.all(state["model"].weight == step), latest
        seen.append(step)
    assert len(seen) == 20 and seen == sorted(seen)  # every kill left a loadable latest, later each time
