"""Batched evaluation throughput vs a one-sample-at-a-time loop (same model, same samples, greedy).

    python -m benchmarks eval                                   # random-init tiny Qwen2-VL
    MIG_BENCH_MODEL=outputs/cache/sft-<key>/model python -m benchmarks eval   # a trained model folder

Both runs go through `mig_eval.evaluate.evaluate_samples` (batch size `MIG_BENCH_BATCH`, default 32,
vs 1) on MIG-Synth samples of all ten tasks (`MIG_BENCH_PER_TASK`, default 8), `eval.max_new_tokens` as
configured (48; random weights decode all of them). The benchmark fails
if any prediction differs between the two: batching must not change what is scored. Prints
samples/s for both and their ratio.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> str:
    from mig_lab import setup_env

    setup_env()
    from hydra import compose, initialize_config_dir

    from mig_data.loading import load_split
    from mig_data.schema import MIG_TASKS
    from mig_data.synth.generate import generate_split
    from mig_eval.evaluate import evaluate_samples
    from mig_lab.config import register_configs
    from mig_models.builders import build_model

    register_configs()
    per_task = int(os.environ.get("MIG_BENCH_PER_TASK", "8"))
    batch = int(os.environ.get("MIG_BENCH_BATCH", "32"))
    model_path = os.environ.get("MIG_BENCH_MODEL") or None
    conf = Path(__file__).resolve().parent.parent / "conf"
    with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
        cfg = compose(config_name="config", overrides=[
            f"data.synth.tasks=[{','.join(MIG_TASKS)}]", "data.synth.n_train=0", f"data.synth.n_eval={per_task}"])
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="bench_eval_") as tmp:
        tmp = Path(tmp)
        generate_split(cfg.data.synth, seed=0, split="eval", out_dir=tmp / "data")
        samples = load_split(tmp / "data", "eval")
        model, processor = build_model(cfg.model, seed=0, path=model_path)
        e = cfg.eval.copy()
        e.batch_size = 1
        evaluate_samples(model, processor, cfg.model.family, samples[:2], e, tmp / "warmup.jsonl")  # warm-up

        t0 = time.perf_counter()
        one = evaluate_samples(model, processor, cfg.model.family, samples, e, tmp / "one.jsonl")
        t_one = time.perf_counter() - t0
        e.batch_size = batch
        t0 = time.perf_counter()
        batched = evaluate_samples(model, processor, cfg.model.family, samples, e, tmp / "batched.jsonl")
        t_batched = time.perf_counter() - t0

    diff = [(a["index"], a["response"], b["response"]) for a, b in zip(one, batched) if a["response"] != b["response"]]
    n = len(samples)
    print(f"model: {model_path or 'tiny ' + cfg.model.name + ' (random init)'}; {n} MIG-Synth samples "
          f"({per_task} per task), {cfg.eval.max_new_tokens} new tokens max, greedy, {torch.get_num_threads()} threads")
    print(f"distinct responses: {len({p['response'] for p in one})}; identical predictions: {n - len(diff)}/{n}")
    print(f"one at a time : {t_one:7.2f} s  {n / t_one:7.2f} samples/s")
    print(f"batch of {batch:<4} : {t_batched:7.2f} s  {n / t_batched:7.2f} samples/s")
    print(f"speed-up      : {t_one / t_batched:.2f}x")
    headline = f"batched eval vs one at a time: {t_one / t_batched:.2f}x"
    if diff:
        for idx, a, b in diff[:5]:
            print(f"  sample {idx}: one-at-a-time {a!r} vs batched {b!r}")
        raise AssertionError(f"{len(diff)} of {n} predictions differ between batched and one-at-a-time evaluation")
    return headline


if __name__ == "__main__":
    main()
