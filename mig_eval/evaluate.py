"""Batched MIG evaluation: generate, parse, score, aggregate.

Predictions are appended to `predictions.jsonl` as they are made (one line per sample, flushed),
so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

from mig_data.collate import generation_batch
from mig_data.schema import Sample
from mig_eval.boxes import iou, parse_response
from mig_eval.metrics import aggregate
from mig_lab import progress
from mig_lab.records import atomic_write_text
from mig_models.generation import generate

log = logging.getLogger(__name__)


def migician_y_rescale(box):
    """The y-axis rescale Migician's published scorer applies to its own model only (opt-in)."""
    x1, y1, x2, y2 = box
    return (x1, round(min(y1 * 1.05, 0.999), 3), x2, round(min(y2 * 1.10, 0.999), 3))


def score_response(sample: Sample, response: str, hws: list, convention: str,
                   y_rescale: bool = False) -> dict[str, Any]:
    """Parse one response and score it against the sample's ground truth."""
    parsed = parse_response(response, convention, image_sizes=hws, default_image=sample.answer_image or 0)
    box = parsed.box
    if box is not None and y_rescale:
        box = migician_y_rescale(box)
    return {
        "id": sample.id,
        "task": sample.task,
        "response": response,
        "box": list(box) if box is not None else None,
        "image": parsed.image,
        "gt_image": sample.answer_image if sample.task == "group_grounding" else None,
        "well_formed": parsed.well_formed,
        "iou": iou(sample.answer, box) if sample.answer is not None else 0.0,
    }


def read_predictions(path: Path) -> dict[int, dict]:
    """Predictions already made, by sample index (a torn last line from a kill is ignored)."""
    done: dict[int, dict] = {}
    if not path.exists():
        return done
    with open(path) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[rec["index"]] = rec
    return done


def evaluate_samples(model: Any, processor: Any, family: str, samples: list[Sample], ecfg: DictConfig,
                     pred_path: Path, seed: int = 0, system_prompt: Optional[str] = None,
                     convention: Optional[str] = None) -> list[dict]:
    """Evaluate `samples`, appending to `pred_path`; returns predictions in sample order."""
    convention = convention or (family if ecfg.convention == "auto" else ecfg.convention)
    done = read_predictions(pred_path)
    if pred_path.exists():  # drop a torn last line (a kill mid-write) before appending
        atomic_write_text(pred_path, "".join(json.dumps(done[i]) + "\n" for i in sorted(done)))
    todo = [i for i in range(len(samples)) if i not in done]
    if done:
        log.info("resuming evaluation: %d of %d predictions already in %s", len(done), len(samples), pred_path)
    model.eval()
    pred_path.parent.mkdir(parents=True, exist_ok=True)
    with open(pred_path, "a") as out:
        for start in progress(range(0, len(todo), ecfg.batch_size), desc="eval"):
            idx = todo[start:start + ecfg.batch_size]
            chunk = [samples[i] for i in idx]
            batch, hws = generation_batch(processor, family, chunk, system_prompt=system_prompt)
            texts, _ = generate(model, processor.tokenizer, batch, ecfg.max_new_tokens, do_sample=ecfg.do_sample,
                                temperature=ecfg.temperature, seed=seed + start)
            for i, s, text, hw in zip(idx, chunk, texts, hws):
                rec = {"index": i, **score_response(s, text, hw, convention, ecfg.migician_y_rescale)}
                out.write(json.dumps(rec) + "\n")
                done[i] = rec
            out.flush()
    return [done[i] for i in range(len(samples))]


def summarize(metrics: dict) -> dict:
    """The compact summary a stage returns (overall plus acc@0.5 per task)."""
    return {"overall": metrics["overall"],
            "tasks": {t: {"acc@0.5": m.get("acc@0.5"), "miou": m.get("miou"), "n": m["n"]}
                      for t, m in metrics["tasks"].items()}}


def flat_metrics(metrics: dict, prefix: str = "eval") -> dict[str, float]:
    out = {f"{prefix}/{k}": v for k, v in metrics["overall"].items() if isinstance(v, (int, float))}
    for task, m in metrics["tasks"].items():
        out.update({f"{prefix}/{task}/{k}": v for k, v in m.items() if isinstance(v, (int, float))})
    return out


__all__ = ["aggregate", "evaluate_samples", "score_response", "read_predictions", "summarize", "flat_metrics"]
