"""Checkpoints for exact resume: model, optimizer, scheduler, data position and RNG states,
written atomically (a temporary folder renamed into place, then the `latest` pointer).
"""

from __future__ import annotations

import logging
import pickle
import random
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from lightning.fabric import Fabric
from lightning.fabric.strategies import DeepSpeedStrategy

from mig_lab.ranks import gather_objects
from mig_lab.records import atomic_write_json, atomic_write_text, replace_dir

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def latest_checkpoint(ckpt_root: Path) -> Optional[Path]:
    pointer = Path(ckpt_root) / "latest"
    if not pointer.exists():
        return None
    path = Path(ckpt_root) / pointer.read_text().strip()
    return path if (path / "state.ckpt").exists() else None


def save_checkpoint(fabric: Fabric, ckpt_root: Path, step: int, state: dict[str, Any], record: dict,
                    only_params: Optional[set[str]] = None, keep: int = 1) -> Path:
    """Write `step-XXXXXXX/` atomically and point `latest` at it; keep the newest `keep`.

    only_params: save just these model entries (LoRA adapters), not the frozen base.
    """
    ckpt_root = Path(ckpt_root)
    name = f"step-{step:07d}"
    tmp = ckpt_root / f".{name}.tmp"
    if fabric.global_rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    fabric.barrier()
    flt = {"model": lambda k, v: k in only_params} if only_params is not None else None
    if isinstance(fabric.strategy, DeepSpeedStrategy):
        flt = None  # DeepSpeed writes its own engine checkpoint (no filter); the frozen base is saved too
    # every rank's RNG states, in rank order: a run resumes with the same number of ranks
    fabric.save(tmp / "state.ckpt", {**state, "rng": gather_objects(rng_state())}, filter=flt)
    if fabric.global_rank == 0:
        atomic_write_json(tmp / "run.json", {**record, "step": step})
        replace_dir(tmp, ckpt_root / name)
        atomic_write_text(ckpt_root / "latest", name + "\n")
        for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    fabric.barrier()
    return ckpt_root / name


def load_checkpoint(fabric: Fabric, path: Path, state: dict[str, Any], only_params: Optional[set[str]] = None) -> None:
    """Restore `state` in place (model, optimizer, scheduler, counters) and the RNG states.

    Loads with `weights_only=True`: tensors, numbers, strings and plain containers only (all a checkpoint of
    ours holds), so a checkpoint from elsewhere cannot run code; anything else is refused, naming the file."""
    file = Path(path) / "state.ckpt"
    try:
        if only_params is not None and file.is_file():
            saved = torch.load(file, map_location="cpu", weights_only=True)["model"]
            if set(saved) != only_params:
                raise RuntimeError(f"{path}: checkpoint holds {len(saved)} model entries, expected the "
                                   f"{len(only_params)} trainable ones (was it written by another config?)")
        rest = fabric.load(file, state, strict=only_params is None, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()
        detail = next((line for line in reason if "Unsupported global" in line or "GLOBAL" in line), reason[0] if reason else "")
        raise RuntimeError(f"{file}: refused to load: it holds more than tensors, numbers and plain containers "
                           f"({detail.strip()}); a checkpoint written by this project never does") from None
    if "rng" in rest:
        states = rest["rng"] if isinstance(rest["rng"], list) else [rest["rng"]]
        if len(states) != fabric.world_size:
            raise RuntimeError(f"{path}: written by a run with {len(states)} rank(s); resume it with as many "
                               f"(fabric.devices x fabric.num_nodes), this run has {fabric.world_size}")
        set_rng_state(states[fabric.global_rank])
    log.info("resumed from %s (step %s)", path, state.get("step"))


def trainable_names(model: torch.nn.Module) -> set[str]:
    """State-dict names of the trainable parameters (call on the unwrapped model)."""
    return {name for name, p in model.named_parameters() if p.requires_grad}
