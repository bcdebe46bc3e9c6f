"""Batched MIG evaluation: generate, parse, score, aggregate.

One evaluation is a list of *units*, each one prompt to the model: a sample (polling), or an image
group of samples (`eval.answer_form=all`, see `answer_forms`). With `eval.cot=single|multi` a unit is
answered in two generation passes (`cot`). Units are generated `eval.batch_size` at a time (left
padding, greedy unless `eval.do_sample`).

Predictions are appended to `predictions.jsonl` as they are made (one line per sample, flushed
per batch), so an interrupted evaluation resumes where it stopped: a unit is redone only when one
of its samples has no prediction yet, and only the missing lines are written. Every line carries
the sample's `index`, task, raw `response`, parsed `box` (normalised, of image `box_image`), `iou`
against the ground truth, `well_formed`, difficulty `tier`; CoT and all-at-once lines also carry
the prompts exactly as the model saw them (decoded from the batch's input ids, image pads removed).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from omegaconf import DictConfig

from mig_data.collate import generation_prompts
from mig_data.schema import Sample
from mig_eval import cot_baselines as cot
from mig_eval.answer_forms import (
    MULTI_TARGET_TASKS,
    all_question,
    all_step1_question,
    all_step2_question,
    assign_boxes,
    plan_units,
)
from mig_eval.metrics import EvalReport, aggregate, difficulty_tier, picked_object
from mig_lab import progress
from mig_lab.boxes import answer_text, find_boxes_at, iou, parse_response, resolve_bbox_id
from mig_lab.config import ConfigError
from mig_lab.records import atomic_write_text
from mig_models.generation import Backend, HFBackend, Sampling
from mig_models.sampling import row_seed

log = logging.getLogger(__name__)


def migician_y_rescale(box):
    """The y-axis rescale Migician's published scorer applies to its own model only (opt-in,
    `eval.migician_y_rescale`): on the normalised box, y1 * 1.05 and y2 * 1.10, each capped at 0.999
    and rounded to 3 places; x untouched. Whether a response gets it: `migician_rescales`."""
    x1, y1, x2, y2 = box
    return (x1, round(min(y1 * 1.05, 0.999), 3), x2, round(min(y2 * 1.10, 0.999), 3))


def migician_rescales(response: str, convention: str = "qwen2_vl") -> bool:
    """Whether Migician's scorer rescales this response's box: only when it holds exactly ONE box.

    thunlp/Migician@7b868a2 `eval/MIG_bench_eval.py` `migician_eval` (L238-245) rescales
    `prediction[1]` and `prediction[3]` inside `try: ... except: pass`. `extract_bbox` (`eval/utils.py`
    L35-42) returns a flat [x1, y1, x2, y2] only for a single match; with several matches (of the first
    syntax of the cascade that matches) it returns a list of boxes, `prediction[1] * 1.05` is then a
    list times a float, the TypeError is swallowed, and `calculate_iou` (L64-65) scores the first box
    unscaled. So a multi-box response (a polling answer with extra boxes, or any all-at-once answer
    with two or more targets) is scored without the rescale; we do the same. Boxes are counted as they
    are read (the answer block, a MIRG `bbox_id` resolved; the convention's syntax: the cascade for
    Qwen2-VL). The released code has no all-at-once form and no Migician CoT path (`MIG_bench_cot.py`
    rescales nothing); we apply this same one-box rule there. Effect on 20 fixed multi-box answers
    (Acc@0.5: 55% rescaling every first box, 45% as Migician): tests/mig_eval/test_migician_y_rescale.py."""
    return len(find_boxes_at(resolve_bbox_id(response, answer_text(response)), convention)) == 1


def score_box(sample: Sample, response: str, box, image: Optional[int], box_image: Optional[int],
              well_formed: bool, y_rescale: bool = False) -> dict[str, Any]:
    """A prediction record for one parsed box (IoU against the sample's ground truth)."""
    if box is not None and y_rescale:
        box = migician_y_rescale(box)
    return {
        "id": sample.id,
        "task": sample.task,
        "response": response,
        "box": list(box) if box is not None else None,
        "image": image,
        "box_image": box_image if box is not None else None,
        "gt_image": sample.answer_image if sample.task == "group_grounding" else None,
        "well_formed": well_formed,
        "iou": iou(sample.answer, box) if sample.answer is not None else 0.0,
        "tier": difficulty_tier(sample.meta),
        "picked": picked_object(sample.meta, sample.answer, sample.answer_image, box, box_image),
    }


def score_response(sample: Sample, response: str, hws: list, convention: str,
                   y_rescale: bool = False, default_image: Optional[int] = None) -> dict[str, Any]:
    """Parse one response (first box, Migician's rules) and score it against the ground truth.
    `hws`: per-image (h, w) the model saw; `default_image`: the image an unnamed box lies in."""
    default = (sample.answer_image or 0) if default_image is None else default_image
    parsed = parse_response(response, convention, image_sizes=hws, default_image=default)
    box_img = parsed.image if parsed.image is not None else default
    return score_box(sample, response, parsed.box, parsed.image, box_img, parsed.well_formed,
                     y_rescale and migician_rescales(response, convention))


def read_predictions(path: Path) -> dict[int, dict]:
    """Predictions already made, by sample index (a torn last line from a kill is ignored), with those in
    the per-rank part files of an interrupted sharded evaluation (`<name>.rank<R>.jsonl`)."""
    done: dict[int, dict] = {}
    for p in [path, *sorted(Path(path).parent.glob(f"{Path(path).stem}.rank*.jsonl"))]:
        if not p.exists():
            continue
        with open(p) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[rec["index"]] = rec
    return done


def _append_safely(path: Path):
    """Open for appending; a torn last line (a kill mid-write) is closed first, so it stays one bad line."""
    torn = path.exists() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
    f = open(path, "a")
    if torn:
        f.write("\n")
    return f


@dataclass
class Prompt:
    sample: Sample
    question: str
    images: list[int]  # which of the sample's images the model sees
    need_format: bool  # append the family's format prompt


def shown_prompts(batch: dict, tokenizer: Any) -> list[str]:
    """Each row's prompt as the model received it: its input ids decoded, padding and image pads dropped."""
    drop = {tokenizer.convert_tokens_to_ids("<|image_pad|>"), tokenizer.pad_token_id}
    out = []
    for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
        out.append(tokenizer.decode([t for t, m in zip(ids, mask) if m and t not in drop], skip_special_tokens=False))
    return out


def run_prompts(backend: Backend, processor: Any, family: str, prompts: Sequence[Prompt], ecfg: DictConfig,
                seed: int, system_prompt: Optional[str] = None, record: bool = False
                ) -> tuple[list[str], list[list], list[Optional[str]]]:
    """Generate for a batch of prompts: (responses, per-prompt image sizes, prompts as shown)."""
    samples = [dataclasses.replace(p.sample, need_format=p.need_format) for p in prompts]
    batch = generation_prompts(processor, family, samples, questions=[p.question for p in prompts],
                               image_subsets=[p.images for p in prompts], system_prompt=system_prompt)
    seeds = [row_seed("eval", seed, i) for i in range(len(prompts))] if ecfg.do_sample else None
    texts, _ = backend.generate(batch, Sampling(ecfg.max_new_tokens, ecfg.do_sample, ecfg.temperature), 1, seeds)
    shown = shown_prompts(batch.tensors, processor.tokenizer) if record else [None] * len(prompts)
    return texts, batch.hws, shown


def check_eval_config(ecfg: DictConfig) -> None:
    if ecfg.cot == "single" and ecfg.answer_form == "all":
        raise ConfigError("eval.cot=single shows one image in step 2, which is polling by nature; use "
                          "eval.answer_form=polling with it, or eval.cot=multi for the all-at-once form "
                          "(Table 10's 'All+mCoT')")
    if ecfg.batch_size < 1:
        raise ConfigError(f"config key 'eval.batch_size' must be >= 1, got {ecfg.batch_size}")


def _is_group(unit: list[int], samples: Sequence[Sample], form: str) -> bool:
    return form == "all" and samples[unit[0]].task in MULTI_TARGET_TASKS


def answer_direct(units: list[list[int]], samples: Sequence[Sample], gen, convention: str, ecfg: DictConfig
                  ) -> list[dict]:
    """One pass: each unit's question (polling) or all-at-once question (all)."""
    form = ecfg.answer_form
    prompts = []
    for u in units:
        s = samples[u[0]]
        q = all_question(s) if _is_group(u, samples, form) else s.question
        prompts.append(Prompt(s, q, list(range(len(s.images))), s.need_format))
    texts, hws, shown = gen(prompts, record=form == "all")
    recs = []
    for u, text, hw, prompt in zip(units, texts, hws, shown):
        if _is_group(u, samples, form):
            members = [samples[i] for i in u]
            for i, s, (box, img, well) in zip(u, members, assign_boxes(text, members, convention, hw)):
                rec = score_box(s, text, box, img, img, well,
                                ecfg.migician_y_rescale and migician_rescales(text, convention))
                recs.append({"index": i, **rec, "group": u, "prompt": prompt})
        else:
            recs.append({"index": u[0], **score_response(samples[u[0]], text, hw, convention, ecfg.migician_y_rescale)})
    return recs


def answer_cot(units: list[list[int]], samples: Sequence[Sample], gen, convention: str, ecfg: DictConfig
               ) -> list[dict]:
    """Two passes (migician.txt CoT): step 1 describes the target from all images, step 2 grounds it."""
    mode, form = ecfg.cot, ecfg.answer_form
    firsts = [samples[u[0]] for u in units]
    step1 = [Prompt(s, all_step1_question(s) if _is_group(u, samples, form) else cot.step1_question(s),
                    list(range(len(s.images))), False) for u, s in zip(units, firsts)]
    r1, _, shown1 = gen(step1, record=True)
    step2, images = [], []
    for u, s, r in zip(units, firsts, r1):
        if _is_group(u, samples, form):  # All+mCoT: ground the description in every target at once
            step2.append(Prompt(s, all_step2_question(s, r), list(range(len(s.images))), True))
            images.append(None)
            continue
        k = cot.step2_image(s, r)
        step2.append(Prompt(s, cot.step2_question(s, r, mode, k), cot.step2_images(s, mode, k), True))
        images.append(k)
    r2, hws, shown2 = gen(step2, record=True)
    recs = []
    for u, s, p2, k, text, hw, a, b, first in zip(units, firsts, step2, images, r2, hws, shown1, shown2, r1):
        trace = {"cot": mode, "step1": {"prompt": a, "response": first}, "step2": {"prompt": b, "images": p2.images}}
        if k is None:
            members = [samples[i] for i in u]
            for i, m, (box, img, well) in zip(u, members, assign_boxes(text, members, convention, hw)):
                rescale = ecfg.migician_y_rescale and migician_rescales(text, convention)
                recs.append({"index": i, **score_box(m, text, box, img, img, well, rescale),
                             "group": u, **trace})
            continue
        recs.append({"index": u[0], **score_step2(s, text, hw, k, mode, convention, ecfg.migician_y_rescale), **trace})
    return recs


def score_step2(sample: Sample, response: str, hws: list, image: int, mode: str, convention: str,
                y_rescale: bool = False) -> dict[str, Any]:
    """Score a CoT step-2 answer. Its box lies in the step-2 image `image`: single-image CoT showed
    only that image (`hws` has one entry), multi-image CoT showed all (`hws` per image)."""
    if mode == "single":
        parsed = parse_response(response, convention, image_sizes=hws, default_image=0, single_image=True)
        return score_box(sample, response, parsed.box, image, image, parsed.well_formed,
                         y_rescale and migician_rescales(response, convention))
    rec = score_response(sample, response, hws, convention, y_rescale, default_image=image)
    rec["image"] = rec["image"] if rec["image"] is not None else image
    return rec


def evaluate_samples(model: Any, processor: Any, family: str, samples: list[Sample], ecfg: DictConfig,
                     pred_path: Path, seed: int = 0, system_prompt: Optional[str] = None,
                     convention: Optional[str] = None, rank: int = 0, world: int = 1,
                     gather: Optional[Callable[[Any], list]] = None, backend: Optional[Backend] = None
                     ) -> Optional[list[dict]]:
    """Evaluate `samples`, appending to `pred_path`; returns predictions in sample order. Generation goes
    through `backend` (default: transformers `generate` on `model`).

    Sharded over `world` ranks: the batches are formed exactly as in one process and batch j goes to rank
    j % world (so predictions are identical to a one-process run); each rank appends to its own part file
    (resumable), then `gather` brings every rank's records to rank 0, which writes `pred_path` whole and
    returns them (other ranks return None)."""
    check_eval_config(ecfg)
    convention = convention or (family if ecfg.convention == "auto" else ecfg.convention)
    done = read_predictions(pred_path)
    units = [u for u in plan_units(samples, ecfg.answer_form) if any(i not in done for i in u)]
    if done and rank == 0:
        log.info("resuming evaluation: %d of %d predictions already in %s", len(done), len(samples), pred_path)
    if world > 1:
        gather(None)  # every rank has read the part files before any rank appends to its own
    model.eval()
    backend = backend or HFBackend(model, processor.tokenizer)
    pred_path.parent.mkdir(parents=True, exist_ok=True)
    answer = answer_direct if ecfg.cot == "none" else answer_cot
    part = pred_path if world == 1 else pred_path.with_name(f"{pred_path.stem}.rank{rank}.jsonl")
    starts = list(range(0, len(units), ecfg.batch_size))[rank::world]
    new: dict[int, dict] = {}
    with _append_safely(part) as out:
        for start in progress(starts, desc="eval", rank_zero=rank == 0):
            chunk = units[start:start + ecfg.batch_size]

            def gen(prompts, record=False, _seed=seed + chunk[0][0]):
                return run_prompts(backend, processor, family, prompts, ecfg, _seed, system_prompt, record)

            for rec in answer(chunk, samples, gen, convention, ecfg):
                if rec["index"] not in done and rec["index"] not in new:
                    out.write(json.dumps(rec) + "\n")
                    new[rec["index"]] = rec
            out.flush()
    for shard in (gather(new) if world > 1 else [new]):
        done.update(shard)
    if rank != 0:
        return None
    if world > 1 or len(done) != len(new):  # one whole file, in sample order, without torn lines or parts
        atomic_write_text(pred_path, "".join(json.dumps(done[i]) + "\n" for i in sorted(done)))
        for p in pred_path.parent.glob(f"{pred_path.stem}.rank*.jsonl"):
            p.unlink()
    return [done[i] for i in range(len(samples))]


def summarize(report: EvalReport) -> dict:
    """The compact summary a stage returns (overall plus acc@0.5 per task)."""
    return {"overall": report.overall,
            "tasks": {t: {"acc@0.5": m.get("acc@0.5"), "miou": m.get("miou"), "n": m["n"]}
                      for t, m in report.tasks.items()}}


def flat_metrics(report: EvalReport, prefix: str = "eval") -> dict[str, float]:
    out = {f"{prefix}/{k}": v for k, v in report.overall.items() if isinstance(v, (int, float))}
    for section in (report.tasks, report.groups, report.tiers):
        for name, m in section.items():
            out.update({f"{prefix}/{name}/{k}": v for k, v in m.items() if isinstance(v, (int, float))})
    return out


__all__ = ["aggregate", "evaluate_samples", "score_response", "score_box", "read_predictions", "summarize",
           "flat_metrics"]
