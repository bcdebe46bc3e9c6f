"""scripts/gpu_speed.py (part of `make gpu-check`) runs its CPU smoke path end to end: SFT throughput and HF
rollout throughput on the tiny model, vLLM reported as skipped when it is not installed."""

from __future__ import annotations

import pytest
import torch

from mig_models.vllm_backend import vllm_available
from scripts.gpu_speed import agreement, main, peak_tflops


def test_cpu_smoke_prints_every_measurement(tmp_path, capsys):
    assert main(["--cpu-smoke", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sft:" in out and "tokens/s" in out and "rollouts hf  :" in out
    if not vllm_available():
        assert "rollouts vllm: skipped (vllm is not installed" in out


def test_agreement_counts_positions_of_either_completion():
    pad = 0
    a = torch.tensor([[5, 6, 7, 0], [1, 2, 0, 0]])
    b = torch.tensor([[5, 6, 8], [1, 2, 3]])
    # row 0: 2 of 3 positions agree; row 1: 2 of 3 (b is longer)
    assert agreement(a, b, pad) == pytest.approx(4 / 6)
    assert agreement(a, a, pad) == 1.0
    assert peak_tflops("NVIDIA H200") == 989.0 and peak_tflops("some CPU") is None
