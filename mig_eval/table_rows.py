"""Stages that make paper-table rows without a model of their own (migician.txt Tables 9 and 10).

`random_guess`  Table 10's "Random Guess" row: every sample answered "(0,0),(999,999)" (the whole
                image, as the paper's caption defines it), scored by the one scorer like any model.
`combine_evals` one row from several evaluate stages that each cover other tasks: Table 9's
                "Separate Learning" row, where each task is answered by the model trained on that task
                alone. The inputs' predictions are pooled and aggregated as one evaluation (macro mean
                over tasks, as every table); two inputs scoring the same task is refused.
Both write `predictions.jsonl` and `metrics.json` as an evaluate stage does, so `report` and
`python scripts/paper_table.py` take them as rows.
"""

from __future__ import annotations

import json
from pathlib import Path

from mig_data.loading import load_split
from mig_eval.evaluate import aggregate, read_predictions, score_response, summarize
from mig_lab.config import ConfigError
from mig_lab.records import atomic_write_json, atomic_write_text
from mig_lab.stage_kind import StageContext, stage_kind

RANDOM_GUESS = "<|box_start|>(0,0),(999,999)<|box_end|>"


def write_eval(out_dir: Path, preds: list[dict], info: dict) -> dict:
    atomic_write_text(out_dir / "predictions.jsonl", "".join(json.dumps(p) + "\n" for p in preds))
    report = aggregate(preds)
    report.eval = info
    atomic_write_json(out_dir / "metrics.json", report.to_json())
    return summarize(report)


@stage_kind("random_guess", reads=("data.on_error", "eval.split", "eval.tasks", "eval.max_samples"), needs=("data",))
def random_guess_stage(ctx: StageContext) -> dict:
    """Score the constant answer (0,0),(999,999) on the `data` input's eval split."""
    e = ctx.cfg.eval
    samples = load_split(ctx.input("data").dir, e.split, on_error=ctx.cfg.data.on_error, tasks=e.tasks,
                         max_per_task=e.max_samples)
    preds = [{"index": i, **score_response(s, RANDOM_GUESS, [], "qwen2_vl")} for i, s in enumerate(samples)]
    return write_eval(ctx.out_dir, preds, {"model": "random guess", "answer_form": "constant",
                                           "response": RANDOM_GUESS, "cot": "none", "split": e.split})


@stage_kind("combine_evals", reads=())
def combine_evals_stage(ctx: StageContext) -> dict:
    """Pool the predictions of the evaluate inputs (each on tasks of its own) into one evaluation."""
    preds, owner = [], {}
    for role, res in ctx.inputs.items():
        path = Path(res.dir) / "predictions.jsonl"
        if not path.exists():
            raise ConfigError(f"stage '{ctx.name}': input '{role}' ({res.kind}) has no predictions.jsonl; "
                              f"combine_evals takes evaluate stages")
        mine = list(read_predictions(path).values())
        for task in sorted({p["task"] for p in mine}):
            if task in owner:
                raise ConfigError(f"stage '{ctx.name}': inputs '{owner[task]}' and '{role}' both score task "
                                  f"'{task}'; give each input its own tasks (eval.tasks)")
            owner[task] = role
        preds += mine
    preds = [{**p, "index": i} for i, p in enumerate(preds)]
    return write_eval(ctx.out_dir, preds, {"model": "combined", "answer_form": "polling", "cot": "none",
                                           "combined": owner})
