"""Shared fixtures: composing the real Hydra config, tiny MIG-Synth data, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mig_lab import setup_env

setup_env()
os.environ["WANDB_MODE"] = "offline"

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from mig_lab.config import register_configs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
register_configs()


def compose_cfg(overrides: list[str], tmp: Path | None = None) -> DictConfig:
    """The config `python run.py <overrides>` would run, with outputs under `tmp`."""
    extra = []
    if tmp is not None:
        extra = [f"paths.output_dir={tmp}/run", f"paths.cache_dir={tmp}/cache"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[*overrides, *extra])
    if tmp is None:
        OmegaConf.update(cfg, "paths.output_dir", "unused", force_add=True)
    return cfg


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """A small MIG-Synth group-grounding split pair (16 train, 4 eval) on disk."""
    from mig_data.synth.generate import generate_split

    out = tmp_path_factory.mktemp("synth")
    cfg = compose_cfg(["data.synth.n_train=16", "data.synth.n_eval=4"]).data.synth
    generate_split(cfg, seed=0, split="train", out_dir=out)
    generate_split(cfg, seed=0, split="eval", out_dir=out)
    return out


@pytest.fixture
def tiny_cfg(tmp_path) -> DictConfig:
    return compose_cfg(["logger=csv", "fabric=cpu"], tmp_path)


def pytest_collection_modifyitems(config, items):
    """`@pytest.mark.gpu` tests need CUDA: skipped, with the reason shown, on a machine without it."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (make gpu-check on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
