"""MIG-Synth generation throughput: worker processes vs in-process (same split, same files).

    python -m benchmarks synth
    MIG_BENCH_SYNTH_PER_TASK=200 MIG_BENCH_SYNTH_WORKERS=4 python -m benchmarks synth

Generates the eval split of every MIG-Synth task (`MIG_BENCH_SYNTH_PER_TASK` samples each,
default 48) with `data.synth.workers=0` (the baseline) and `workers=MIG_BENCH_SYNTH_WORKERS`
(default 2), PNGs and JSON included; fails if the two splits differ. Prints samples/s for both,
their ratio, and the in-process rate of each task.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def _timed_split(cfg, out_dir: Path) -> tuple[list, float]:
    from mig_data.synth.generate import generate_split

    t0 = time.perf_counter()
    samples = generate_split(cfg, seed=0, split="eval", out_dir=out_dir)
    return samples, time.perf_counter() - t0


def main() -> None:
    from omegaconf import OmegaConf

    from mig_data.synth.tasks import TASK_GENERATORS
    from mig_lab.config import SynthConfig

    per_task = int(os.environ.get("MIG_BENCH_SYNTH_PER_TASK", "48"))
    workers = int(os.environ.get("MIG_BENCH_SYNTH_WORKERS", "2"))
    tasks = sorted(TASK_GENERATORS)
    base = OmegaConf.merge(OmegaConf.structured(SynthConfig), {"tasks": tasks, "n_eval": per_task})
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        serial, t_serial = _timed_split(OmegaConf.merge(base, {"workers": 0}), Path(tmp) / "serial")
        parallel, t_par = _timed_split(OmegaConf.merge(base, {"workers": workers}), Path(tmp) / "parallel")
        strip = [{k: v for k, v in s.to_dict().items() if k != "images"} for s in serial]
        if strip != [{k: v for k, v in s.to_dict().items() if k != "images"} for s in parallel]:
            raise AssertionError("workers changed the generated split")
        per = {}
        for task in tasks:  # in-process rate per task (PNG writing included)
            cfg = OmegaConf.merge(base, {"tasks": [task], "n_eval": max(8, per_task // 4), "workers": 0})
            samples, t = _timed_split(cfg, Path(tmp) / f"one_{task}")
            per[task] = len(samples) / t
    n = len(serial)
    print(f"MIG-Synth eval split, {len(tasks)} tasks x {per_task} samples = {n} samples (112 px, PNG + JSON)")
    print(f"  workers=0 (baseline): {n / t_serial:8.1f} samples/s  ({t_serial:.2f} s)")
    print(f"  workers={workers}:            {n / t_par:8.1f} samples/s  ({t_par:.2f} s)")
    print(f"  ratio workers={workers} / workers=0: {t_serial / t_par:.2f}x  (os.cpu_count()={os.cpu_count()})")
    print("  in-process samples/s per task: " + ", ".join(f"{t} {r:.0f}" for t, r in per.items()))


if __name__ == "__main__":
    main()
