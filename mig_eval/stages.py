"""Evaluation and report stages."""

from __future__ import annotations

from pathlib import Path

from mig_data.loading import load_split
from mig_eval.evaluate import aggregate, evaluate_samples, flat_metrics, summarize
from mig_eval.report import write_comparison
from mig_lab.fabric import make_fabric
from mig_lab.loggers import make_loggers
from mig_lab.records import atomic_write_json, to_plain
from mig_lab.stages import StageContext, model_dir, stage
from mig_models.builders import build_model


@stage("evaluate", reads=("seed", "model", "data.on_error", "eval", "fabric"))
def evaluate_stage(ctx: StageContext) -> dict:
    """Evaluate the `model` input (or the `model` config) on the `data` input's eval split."""
    cfg = ctx.cfg
    e = cfg.eval
    samples = load_split(ctx.input("data").dir, e.split, on_error=cfg.data.on_error, tasks=e.tasks,
                         max_per_task=e.max_samples)
    path = model_dir(ctx.inputs["model"]) if "model" in ctx.inputs else None
    model, processor = build_model(cfg.model, seed=cfg.seed, path=path)
    loggers = make_loggers(cfg, ctx.out_dir, name=f"{ctx.name}-{ctx.key}", group=ctx.group, config=to_plain(cfg))
    fabric = make_fabric(cfg, loggers)
    model = fabric.to_device(model)
    with fabric.autocast():
        preds = evaluate_samples(model, processor, cfg.model.family, samples, e, ctx.out_dir / "predictions.jsonl",
                                 seed=cfg.seed, system_prompt=cfg.model.system_prompt)
    metrics = aggregate(preds)
    atomic_write_json(ctx.out_dir / "metrics.json", metrics)
    fabric.log_dict(flat_metrics(metrics))
    for lg in loggers:
        lg.finalize("success")
    return summarize(metrics)


@stage("report", reads=("report",), cache=False)
def report_stage(ctx: StageContext) -> dict:
    """A table of the evaluate inputs (one row per input role), written as markdown and CSV."""
    rows = {role: Path(res.dir) / "metrics.json" for role, res in ctx.inputs.items()}
    table = write_comparison(rows, ctx.out_dir, title=ctx.cfg.report.get("title", ctx.group))
    out = Path(ctx.run_dir) / "table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print("\n" + table)
    return {"table": str(ctx.out_dir / "table.md")}
