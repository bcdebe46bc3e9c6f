"""Ship a finished `experiment=tiny_base` run as committed weights: `mig_models/assets/<name>/`.

    python scripts/ship_base.py outputs/runs/tiny_base/<time> --name tiny_base

copies the final sft stage's model folder (safetensors, config, tokenizer, processor) into the
package and writes `recipe.json` beside it: the command that rebuilds the weights, every stage's
cache key, training time and steps, the held-out metrics, and `check` - Acc@0.5 on the first
`--check` held-out samples, which tests/mig_models/test_tiny_base.py re-measures on the committed weights.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from mig_data.loading import load_split
from mig_eval.evaluate import evaluate_samples
from mig_lab.records import atomic_write_json, read_json
from mig_models.builders import build_model, count_parameters

ASSETS = Path(__file__).resolve().parent / "assets"
MAX_WEIGHTS_BYTES = 25 * 2**20


def check_accuracy(model_dir: Path, model_cfg, data_dir: Path, eval_cfg, n: int) -> float:
    """Acc@0.5 of the model folder on the first `n` samples of the eval split (greedy)."""
    samples = load_split(data_dir, "eval")[:n]
    model, processor = build_model(model_cfg, seed=0, path=model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        preds = evaluate_samples(model, processor, model_cfg.family, samples, eval_cfg, Path(tmp) / "p.jsonl")
    return sum(p["iou"] >= 0.5 for p in preds) / len(preds)


def ship(run_dir: Path, name: str, n_check: int = 32, final: str = "sft", single_eval: str = "eval_single",
         mig_eval: str = "eval_mig") -> Path:
    stages = read_json(run_dir / "stages.json")
    cfg = OmegaConf.create(read_json(run_dir / "run.json")["config"])
    src = Path(stages[final]["dir"]) / "model"
    if (src / "model.safetensors").stat().st_size > MAX_WEIGHTS_BYTES:
        raise ValueError(f"{src}: weights over {MAX_WEIGHTS_BYTES} bytes; the package ships at most 25 MB")
    done = {n: read_json(Path(s["dir"]) / "done.json") for n, s in stages.items() if s["kind"] != "report"}
    sft = [n for n, s in stages.items() if s["kind"] == "sft"]
    single = read_json(Path(stages[single_eval]["dir"]) / "metrics.json")
    mig = read_json(Path(stages[mig_eval]["dir"]) / "metrics.json") if mig_eval in stages else None
    data_dir = Path(done[single_eval]["inputs"]["data"])
    model_cfg = OmegaConf.create(done[final]["config"]["model"])
    model, _ = build_model(model_cfg, seed=0, path=src)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = [o for o in (OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.exists() else [])
                 if not o.startswith(("experiment=", "hydra.", "paths."))]  # where outputs go does not change them
    recipe = {
        "name": name,
        "family": cfg.model.family,
        "command": " ".join(["python run.py", f"experiment={cfg.name}", *overrides]),
        "experiment": cfg.name,
        "git_sha": done[final]["git_sha"],
        "final_stage": {"name": final, "key": stages[final]["key"]},
        "stage_keys": {n: f"{s['kind']}-{s['key']}" for n, s in stages.items() if s["kind"] != "report"},
        "params": count_parameters(model),
        "train": {n: {"steps": done[n]["summary"]["steps"], "seconds": done[n]["seconds"],
                      "lr": done[n]["config"]["train"]["lr"], "batch_size": done[n]["config"]["train"]["batch_size"]}
                  for n in sft},
        "train_seconds": round(sum(done[n]["seconds"] for n in sft), 1),
        "heldout": {"single_grounding": single["tasks"]["single_grounding"],
                    "mig_tasks": {t: m.get("acc@0.5") for t, m in mig["tasks"].items()} if mig else None},
        "check": {"n": n_check, "acc@0.5": check_accuracy(src, model_cfg, data_dir, OmegaConf.create(
            done[single_eval]["config"]["eval"]), n_check)},
    }
    out = ASSETS / name
    tmp = ASSETS / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    atomic_write_json(tmp / "recipe.json", recipe)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the run folder of a finished experiment=tiny_base run")
    parser.add_argument("--name", required=True, help="asset folder: tiny_base | tiny_base_qwen2_5_vl")
    parser.add_argument("--check", type=int, default=32, help="held-out samples whose accuracy the test re-checks")
    args = parser.parse_args()
    out = ship(args.run_dir, args.name, args.check)
    print(json.dumps(read_json(out / "recipe.json"), indent=1))


if __name__ == "__main__":
    main()
