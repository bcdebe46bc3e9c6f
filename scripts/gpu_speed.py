"""Throughput on this machine's GPU (part of `make gpu-check`; never in CI):

    python scripts/gpu_speed.py                 # Qwen2-VL-2B-size, random weights, bf16-mixed, cuda:0
    python scripts/gpu_speed.py --cpu-smoke     # the same code on the tiny model on CPU (what the tests run)

Prints, one line each: SFT tokens/s and MFU (fp32 master weights, bf16 autocast); rollout tokens/s of HF
`generate` and of the vLLM backend on 3-image prompts (B prompts x G completions, `--new-tokens`, sampled);
greedy agreement of vLLM's rollouts with HF's on 32 prompts (share of token positions where both chose the
same token). The GRPO step's time split (generate / score / log-probs / update / sync) comes from the
`grpo_*` runs of scripts/gpu_check.sh (their metrics.csv `time/*_s`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import torch

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}  # dense, per GPU


def peak_tflops(name: str) -> Optional[float]:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from mig_lab.config import register_configs

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=str(Path(__file__).resolve().parent.parent / "conf")):
        return hydra_compose(config_name="config", overrides=overrides)


def synth_samples(cfg, out: Path, n: int, images: int) -> list:
    from omegaconf import open_dict

    from mig_data.loading import load_split
    from mig_data.synth.generate import generate_split

    with open_dict(cfg):
        cfg.data.synth.update(tasks=["group_grounding"], n_train=n, n_eval=0, min_images=images, max_images=images,
                              image_size=448, task_images={})
    generate_split(cfg.data.synth, seed=0, split="train", out_dir=out)
    return load_split(out, "train")


def sft_throughput(model, processor, samples, family: str, device: str, steps: int, batch: int) -> tuple[float, float]:
    """(tokens/s, seconds/step) of forward + backward + AdamW on batches of `batch` samples."""
    from mig_data.collate import SFTCollator

    collate = SFTCollator(processor, family, max_seq_len=8192)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()
    tokens, seconds = 0, 0.0
    for i in range(steps + 2):  # 2 warm-up steps
        b = {k: v.to(device) for k, v in collate(samples[(i * batch) % len(samples):][:batch]).items()}
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**b).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            tokens += int(b["attention_mask"].sum())
            seconds += time.perf_counter() - t0
    return tokens / seconds, seconds / steps


def rollout_throughput(backend, prompts, group: int, new_tokens: int, device: str) -> tuple[float, torch.Tensor]:
    """(generated tokens/s, completion ids) of one sampled call: B prompts x `group` completions."""
    from mig_models.generation import Sampling

    n = len(prompts.texts) * group
    seeds = list(range(n))
    backend.generate(prompts, Sampling(8, True, 1.0), group, seeds)  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    _, ids = backend.generate(prompts, Sampling(new_tokens, True, 1.0), group, seeds)
    if device == "cuda":
        torch.cuda.synchronize()
    return ids.numel() / (time.perf_counter() - t0), ids


def agreement(a: torch.Tensor, b: torch.Tensor, pad: int) -> float:
    """Share of token positions (of either completion, up to the longer) where two greedy runs agree."""
    width = max(a.shape[1], b.shape[1])
    a = torch.nn.functional.pad(a, (0, width - a.shape[1]), value=pad)
    b = torch.nn.functional.pad(b, (0, width - b.shape[1]), value=pad)
    used = (a != pad) | (b != pad)
    return float(((a == b) & used).sum() / used.sum().clamp(min=1))


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny model on CPU, HF only, small sizes (the tests)")
    ap.add_argument("--out", type=Path, default=Path("outputs/gpu_check/speed"))
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    args = ap.parse_args(argv)
    from mig_lab import setup_env

    setup_env()
    from mig_data.collate import generation_prompts
    from mig_models.builders import build_model, count_parameters
    from mig_models.generation import HFBackend, Sampling, make_backend
    from mig_models.vllm_backend import vllm_available

    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        print("gpu_speed: no CUDA device (use --cpu-smoke on a CPU)")
        return 2
    cfg = compose(["model=tiny_qwen2_vl" if smoke else "model=qwen2_vl_2b_random", "generation.vllm.sleep=false"])
    new_tokens, n_prompts, group = (8, 2, 2) if smoke else (args.new_tokens, args.prompts, args.group)
    samples = synth_samples(cfg, args.out / "data", max(32, n_prompts), images=3)
    model, processor = build_model(cfg.model, seed=0)
    model.to(device)
    name = "CPU" if smoke else torch.cuda.get_device_name(0)
    params = count_parameters(model)

    tok_s, step_s = sft_throughput(model, processor, samples, cfg.model.family, device, 2 if smoke else 5, 2 if smoke else 8)
    peak = peak_tflops(name)
    mfu = f"{6 * params * tok_s / (peak * 1e12):.1%}" if peak else "n/a (peak unknown)"
    print(f"sft: {tok_s:,.0f} tokens/s, {step_s:.3f} s/step, MFU {mfu} ({params / 1e9:.2f}B params, {name})", flush=True)

    model.eval()
    if device == "cuda":
        model.to(torch.bfloat16)  # generation in bf16, as the vLLM engine runs
    prompts = generation_prompts(processor, cfg.model.family, samples[:n_prompts])
    hf = HFBackend(model, processor.tokenizer)
    hf_tok_s, _ = rollout_throughput(hf, prompts, group, new_tokens, device)
    print(f"rollouts hf  : {hf_tok_s:,.0f} tokens/s ({n_prompts} prompts x {group}, 3 images, {new_tokens} new tokens)",
          flush=True)
    if not vllm_available():
        print("rollouts vllm: skipped (vllm is not installed: pip install -e '.[vllm]')")
        return 0
    vllm = make_backend(cfg, model, processor)
    vllm.sync_weights(model)
    v_tok_s, _ = rollout_throughput(vllm, prompts, group, new_tokens, device)
    print(f"rollouts vllm: {v_tok_s:,.0f} tokens/s ({v_tok_s / hf_tok_s:.1f}x hf)", flush=True)
    greedy = Sampling(64)
    p32 = generation_prompts(processor, cfg.model.family, samples[:32])
    _, a = hf.generate(p32, greedy)
    _, b = vllm.generate(p32, greedy)
    print(f"greedy agreement vllm vs hf: {agreement(a, b, processor.tokenizer.pad_token_id):.1%} of tokens "
          f"(32 prompts, 64 new tokens, bf16, random weights)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
