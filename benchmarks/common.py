"""What the benchmarks share: the config they compose and the MIG-Synth prompts both sides of a comparison
train on. (`python -m benchmarks` runs only `bench_*.py`.)"""

from __future__ import annotations

import time
from pathlib import Path

TINY_BASE = "pkg://mig_models/assets/tiny_base"
TASKS = ["group_grounding", "common_object", "region"]


def bench_cfg(tmp: Path, model_dir: str, *overrides: str):
    """The root config on the CPU with CSV logs under `tmp`, the model at `model_dir` (a tiny-base-shaped
    folder), 32 training samples per task of `TASKS`, then `overrides`."""
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        return compose(config_name="config", overrides=[
            "model=tiny_base", f"model.path={model_dir}", "logger=csv", "fabric=cpu", f"paths.output_dir={tmp}",
            f"paths.cache_dir={tmp}/cache", f"data.synth.tasks=[{','.join(TASKS)}]", "data.synth.n_train=32",
            "data.synth.n_eval=0", *overrides])


def synth_data(cfg, out: Path) -> Path:
    """The train split of `cfg.data.synth` written to `out`."""
    from mig_data.synth.generate import generate_split

    generate_split(cfg.data.synth, seed=cfg.seed, split="train", out_dir=out)
    return out


def trl_step_timer(times: list[float]):
    """A transformers `TrainerCallback` appending each optimizer step's wall time to `times` (TRL's trainers)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)

    return StepTimer()
