"""On a CUDA GPU (skipped elsewhere): the embedded default trains and evaluates in bf16-mixed, as on a cluster."""

from __future__ import annotations

import math

import pytest

from mig_lab.graph import run_stages
from tests.conftest import compose_cfg


@pytest.mark.gpu
def test_smoke_trains_and_evaluates_on_cuda_in_bf16_mixed(tmp_path):
    cfg = compose_cfg(["experiment=smoke", "debug=tiny", "logger=csv", "fabric.accelerator=cuda",
                       "fabric.precision=bf16-mixed"], tmp_path)
    results = run_stages(cfg, tmp_path / "run")
    sft = results["sft"].summary
    assert sft["steps"] == cfg.debug.max_steps and math.isfinite(sft["final_loss"])
    assert (results["sft"].dir / "model" / "model.safetensors").exists()
    assert results["eval_sft"].summary["overall"]["n"] > 0
