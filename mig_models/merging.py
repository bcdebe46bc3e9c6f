"""Model merging: weight averaging (Migician averages its stage-1 and stage-2 models, migician.txt 4.3)
and task arithmetic (Ilharco et al.: base + scale * sum(finetuned - base)).

Works on saved Hugging Face model folders, full fine-tunes and LoRA runs alike (our LoRA SFT stage
exports the merged model; a bare peft adapter folder is merged into its `--base` first). Mismatched
architectures, keys, shapes or dtypes fail with a message naming what differs.

CLI:  python scripts/merge_models.py --out merged/ run1/model run2/model [--weights 0.5,0.5]
      python scripts/merge_models.py --method task_arithmetic --base base/ --scale 0.5 --out m/ ft1/ ft2/
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

import torch
from safetensors.torch import load_file, save_file

StateDict = dict[str, torch.Tensor]


class MergeError(ValueError):
    """Checkpoints that cannot be merged; the message names the key or field that differs."""


def check_compatible(state_dicts: Sequence[StateDict], names: Sequence[str]) -> None:
    ref_keys = set(state_dicts[0])
    for sd, name in zip(state_dicts[1:], names[1:]):
        missing, extra = sorted(ref_keys - set(sd)), sorted(set(sd) - ref_keys)
        if missing or extra:
            raise MergeError(f"{name} does not match {names[0]}: missing keys {missing[:5]}, extra keys {extra[:5]}")
        for k in sorted(ref_keys):
            a, b = state_dicts[0][k], sd[k]
            if a.shape != b.shape:
                raise MergeError(f"{name}: key {k!r} has shape {tuple(b.shape)}, {names[0]} has {tuple(a.shape)}")
            if a.dtype != b.dtype:
                raise MergeError(f"{name}: key {k!r} has dtype {b.dtype}, {names[0]} has {a.dtype}")


def normalized_weights(n: int, weights: Optional[Sequence[float]]) -> list[float]:
    if weights is None or len(weights) == 0:
        return [1.0 / n] * n
    if len(weights) != n:
        raise MergeError(f"{len(weights)} weights for {n} checkpoints")
    total = float(sum(weights))
    if total <= 0:
        raise MergeError(f"merge weights must sum to a positive number, got {list(weights)}")
    return [w / total for w in weights]


def average(state_dicts: Sequence[StateDict], weights: Optional[Sequence[float]] = None,
            names: Optional[Sequence[str]] = None) -> StateDict:
    """Weighted elementwise mean of N state dicts (weights normalised to sum 1; default: equal)."""
    names = list(names or [f"checkpoint {i}" for i in range(len(state_dicts))])
    check_compatible(state_dicts, names)
    w = normalized_weights(len(state_dicts), weights)
    out = {}
    for k, ref in state_dicts[0].items():
        if not ref.is_floating_point():  # integer buffers (e.g. position ids) must agree, not average
            if any(not torch.equal(ref, sd[k]) for sd in state_dicts[1:]):
                raise MergeError(f"non-float key {k!r} differs between checkpoints; cannot average it")
            out[k] = ref.clone()
            continue
        acc = torch.zeros_like(ref, dtype=torch.float64)
        for wi, sd in zip(w, state_dicts):
            acc += wi * sd[k].to(torch.float64)
        out[k] = acc.to(ref.dtype)
    return out


def task_arithmetic(base: StateDict, finetuned: Sequence[StateDict], scale: float = 1.0,
                    names: Optional[Sequence[str]] = None) -> StateDict:
    """base + scale * sum_i (finetuned_i - base)."""
    names = list(names or ["base"] + [f"finetuned {i}" for i in range(len(finetuned))])
    check_compatible([base, *finetuned], names)
    out = {}
    for k, b in base.items():
        if not b.is_floating_point():
            out[k] = b.clone()
            continue
        delta = sum((ft[k].to(torch.float64) - b.to(torch.float64)) for ft in finetuned)
        out[k] = (b.to(torch.float64) + scale * delta).to(b.dtype)
    return out


# --------------------------------------------------------------------------------- model folders
def load_folder_state(path: Path) -> StateDict:
    """All tensors of a saved model folder (single or sharded safetensors)."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise MergeError(f"{path}: no *.safetensors weights (is it a saved model folder?)")
    state: StateDict = {}
    for f in files:
        state.update(load_file(f))
    return state


def folder_architecture(path: Path) -> dict:
    cfg_file = Path(path) / "config.json"
    if not cfg_file.exists():
        raise MergeError(f"{path}: no config.json")
    cfg = json.loads(cfg_file.read_text())
    return {"architectures": cfg.get("architectures"), "model_type": cfg.get("model_type")}


def merge_lora_folder(adapter: Path, base: Path) -> StateDict:
    """A peft adapter folder merged into its base model folder, as a plain state dict."""
    from peft import PeftModel
    from transformers import AutoConfig

    from mig_models.builders import MODEL_CLASSES

    family = AutoConfig.from_pretrained(base).model_type
    model = MODEL_CLASSES[family].from_pretrained(base)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def read_checkpoint(path: Path, lora_base: Optional[Path] = None) -> StateDict:
    path = Path(path)
    if (path / "adapter_config.json").exists():
        if lora_base is None:
            raise MergeError(f"{path} is a LoRA adapter: pass the base model folder (--base) to merge it first")
        return merge_lora_folder(path, lora_base)
    return load_folder_state(path)


def merge_folders(paths: Sequence[Path], out_dir: Path, method: str = "average",
                  weights: Optional[Sequence[float]] = None, base: Optional[Path] = None, scale: float = 1.0) -> Path:
    """Merge saved model folders into `out_dir` (config, tokenizer and processor copied from the first)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise MergeError("nothing to merge")
    arch = [folder_architecture(p if not (p / "adapter_config.json").exists() else base) for p in paths]
    for p, a in zip(paths[1:], arch[1:]):
        if a != arch[0]:
            raise MergeError(f"{p} is {a}, {paths[0]} is {arch[0]}: architectures differ")
    states = [read_checkpoint(p, base) for p in paths]
    names = [str(p) for p in paths]
    if method == "average":
        merged = average(states, weights, names)
    elif method == "task_arithmetic":
        if base is None:
            raise MergeError("task arithmetic needs the base model folder (--base)")
        if folder_architecture(base) != arch[0]:
            raise MergeError(f"base {base} is {folder_architecture(base)}, the checkpoints are {arch[0]}")
        merged = task_arithmetic(load_folder_state(base), states, scale, [str(base), *names])
    else:
        raise MergeError(f"merge method {method!r}; expected 'average' or 'task_arithmetic'")
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    template = paths[0] if not (paths[0] / "adapter_config.json").exists() else base
    shutil.copytree(template, tmp, ignore=shutil.ignore_patterns("*.safetensors", "*.safetensors.index.json"))
    save_file({k: v.contiguous() for k, v in merged.items()}, tmp / "model.safetensors", metadata={"format": "pt"})
    (tmp / "merge.json").write_text(json.dumps({"method": method, "inputs": names, "weights": list(weights or []),
                                                "base": str(base) if base else None, "scale": scale}, indent=2))
    from mig_lab.records import replace_dir

    replace_dir(tmp, out_dir)
    return out_dir
