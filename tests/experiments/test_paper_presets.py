"""The papers' scale presets (recipe=coldstart_7b, coldstart_vs_sft_7b, mirg_7b) set every hyperparameter the
papers state. The tables below are transcribed from the papers (sentence quoted beside each number), not
from the config files; `python run.py ... --cfg job` (what a user inspects) and the planned stages must
show them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from mig_lab.config import ConfigError
from mig_lab.graph import plan
from tests.conftest import REPO, compose_cfg

# coldstart_rl.txt 4.1 ("Implementation details") and 4.2, 3.1
COLDSTART = {
    "model.name": "qwen2_5_vl_7b",  # "we equip the Qwen2.5-VL-7B model"
    "cot.teacher.kind": "model",  # "using a large-scale MLLM, Qwen2.5-VL-72B"
    "cot.teacher.samples": 4,  # "generate four distinct responses"
    "train.mode": "lora",  # "updating only the LLM parameters via LoRA"
    "train.lr": 1e-4,  # "a learning rate of 1e-4 with cosine decay scheduling"
    "train.batch_size": 32,  # "an accumulated total batch size of 32"
    "train.freeze_vision": True,  # "we freeze the vision encoder and MLP projector"
    "train.freeze_projector": True,
    "rl.lr": 5e-5,  # "We set a learning rate of 5e-5"
    "rl.num_generations": 8,  # "with 8 rollout samples per input"
    "rl.micro_batch_size": 2,  # "a batch size of 2"
    "rl.rewards.iou": 1.0,  # "lambda_acc and lambda_format are set to 1.0 and 0.5"
    "rl.rewards.format": 0.5,
    "rl.kl_beta": 1e-3,  # "The KL penalty coefficient beta is set to 0.001"
    "rl.temperature": 0.7,  # "the sampling temperature to 0.7"
    "rl.max_new_tokens": 1024,  # "the output length remains 1024 tokens"
    "eval.max_new_tokens": 1024,
}
COLDSTART_SFT_BASELINE = {  # 4.2: "trained on the same dataset as our stage-1 CoT-SFT with a learning rate of
    "train.lr": 2e-6,  # 2e-6 and an accumulated batch size of 64"
    "train.batch_size": 64,
    "train.split": "direct",
}
# mirg_rl.txt 3.1 and 2.3
MIRG = {
    "model.name": "qwen2_vl_7b",  # "MIRG-RL was developed on Qwen2-VL-7B"
    "train.lr": 2e-5,  # "learning rates of 2e-5 and 5e-6 for the two phases, respectively"
    "rl.lr": 5e-6,
    "train.batch_size": 128,  # "a global batch size of 128"
    "rl.batch_size": 128,
    "rl.rewards.mirg_format": 1.0,  # "r = r_fmt + r_img + r_obj"
    "rl.rewards.image": 1.0,
    "rl.rewards.object": 1.0,
    "rl.rewards.iou": 0.0,
    "rl.rewards.format": 0.0,
}


def _value(cfg, key: str):
    return OmegaConf.select(cfg, key, throw_on_missing=True)


def _cfg_job(*overrides: str):
    out = subprocess.run([sys.executable, "run.py", *overrides, "--cfg", "job"], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return OmegaConf.create(out.stdout)


@pytest.mark.parametrize("command, paper", [
    (["experiment=coldstart_rl_full", "recipe=coldstart_7b"], COLDSTART),
    (["experiment=mirg_rl_full", "recipe=mirg_7b"], MIRG),
])
def test_run_py_cfg_job_prints_the_papers_values(command, paper):
    printed = _cfg_job(*command)
    wrong = {k: (_value(printed, k), v) for k, v in paper.items() if _value(printed, k) != pytest.approx(v)}
    assert not wrong, f"(printed, paper): {wrong}"
    assert printed.fabric.strategy == "fsdp" and printed.fabric.precision == "bf16-mixed"


@pytest.fixture()
def folders(tmp_path):
    """Planning checks that the model and teacher paths are model folders: two empty ones that look so."""
    out = {}
    for name in ("student", "teacher"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        out[name] = str(tmp_path / name)
    return [f"model.path={out['student']}", f"cot.teacher.model_path={out['teacher']}"]


def test_coldstart_stages_get_the_papers_settings(folders):
    stages = {p.name: p.cfg for p in plan(compose_cfg(["experiment=coldstart_table2", "recipe=coldstart_vs_sft_7b",
                                                      *folders]))}
    sft, grpo, baseline = stages["sft_lora"], stages["grpo_full"], stages["sft_plain"]
    for key, value in COLDSTART.items():
        stage = grpo if key.startswith("rl.") else sft
        assert _value(stage, key) == pytest.approx(value), key
    # RL: "we only train the LLM" (full, vision and projector frozen) from the merged CoT-SFT model
    assert grpo.train.mode == "full" and grpo.train.freeze_vision and grpo.train.freeze_projector
    for key, value in COLDSTART_SFT_BASELINE.items():
        assert _value(baseline, key) == pytest.approx(value), key
    assert baseline.train.mode == "full" and stages["sft_plain"] is not stages["sft_lora"]
    # the CoT-SFT keeps its own settings beside the baseline's
    assert (sft.train.lr, sft.train.batch_size, sft.train.split) == (1e-4, 32, "train")
    # at 8 GPUs: 2 prompts per GPU x 4 accumulation steps (the paper's per-device batch and accumulation)
    assert grpo.rl.batch_size == 2 * 4 * 8 and sft.train.batch_size % (sft.train.micro_batch_size * 8) == 0


def test_mirg_stages_get_the_papers_settings(folders):
    stages = {p.name: p.cfg for p in plan(compose_cfg(["experiment=mirg_rl_full", "recipe=mirg_7b", *folders]))}
    for key, value in MIRG.items():
        stage = stages["rl"] if key.startswith("rl.") else stages["sft"]
        assert _value(stage, key) == pytest.approx(value), key
    # "10k samples ... an additional 7k samples": the RL hold-out is 7 of 17 parts of 7 tasks' samples
    traj = stages["traj"]
    assert traj.trajectory.rl_fraction == pytest.approx(7 / 17, abs=1e-3)
    assert 7 * traj.data.synth.n_train == pytest.approx(17_000, rel=1e-3)


def test_paper_presets_leave_the_tiny_recipes_and_their_cache_keys_alone():
    """The tiny recipes keep their own (CPU-sized) settings; the presets are separate files."""
    tiny = {p.name: p for p in plan(compose_cfg(["experiment=coldstart_table2"]))}
    assert tiny["sft_lora"].cfg.model.name == "tiny_base" and tiny["sft_lora"].cfg.train.lr == 2e-3
    assert tiny["sft_plain"].cfg.train.split == "direct" and tiny["sft_plain"].cfg.train.mode == "full"
    full = {p.name: p for p in plan(compose_cfg(["experiment=coldstart_rl_full"]))}
    for name in ("data", "cot_data", "sft_lora", "rs", "grpo_full"):  # Tables 2/3 share the method's stages
        assert tiny[name].key == full[name].key, name


def test_a_preset_without_its_model_folders_fails_at_planning_naming_the_key(folders):
    """Planning (before any stage runs) names the folder a user must give: the teacher's, then the model's."""
    with pytest.raises(ConfigError, match=r"cot\.teacher\.model_path"):
        plan(compose_cfg(["experiment=mirg_rl_full", "recipe=mirg_7b", folders[0]]))
    with pytest.raises(ConfigError, match=r"model\.path is not set"):
        plan(compose_cfg(["experiment=coldstart_rl_full", "recipe=coldstart_7b", folders[1]]))
