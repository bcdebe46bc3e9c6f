"""Evaluation and report stages.

`evaluate` runs a model (the `model` input's saved folder, else the `model` config) on the `data`
input's eval split and writes `predictions.jsonl`, `metrics.json` and, with `eval.gallery_per_task`,
box galleries under `gallery/` (also logged to W&B). `report` prints a comparison of its evaluate
inputs, or, with `report.table`, a paper table with the paper's rows beside ours (`mig_eval.tables`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from lightning.fabric import Fabric
from omegaconf import DictConfig, ListConfig

from mig_data.loading import load_split
from mig_eval.evaluate import aggregate, check_eval_config, evaluate_samples, flat_metrics, summarize
from mig_eval.gallery import write_gallery
from mig_eval.report import differences_markdown, paired_differences, write_comparison
from mig_eval.tables import write_table
from mig_lab.config import ConfigError
from mig_lab.fabric import run_loop
from mig_lab.loggers import log_image
from mig_lab.ranks import gather_objects
from mig_lab.records import atomic_write_json, read_json
from mig_lab.stage_kind import StageContext, model_dir, stage_kind
from mig_models.builders import build_model, check_model_source
from mig_models.generation import make_backend


@stage_kind("evaluate", reads=("seed", "model", "run.threads", "data.on_error", "eval", "generation", "fabric"), ranks="all", needs=("data",),
            checks=(check_model_source, lambda cfg, inputs: check_eval_config(cfg.eval)),
       ignores=("fabric.devices", "fabric.num_nodes", "fabric.strategy"))  # sharded: same result on any ranks
def evaluate_stage(ctx: StageContext) -> Optional[dict]:
    """Evaluate the `model` input (or the `model` config) on the `data` input's eval split, sharded over
    the ranks; rank 0 writes `predictions.jsonl` and `metrics.json`."""
    return run_loop(_evaluate, ctx.cfg, ctx.out_dir, f"{ctx.name}-{ctx.key}", ctx.group, ctx)


def _evaluate(fabric: Fabric, cfg: DictConfig, ctx: StageContext) -> Optional[dict]:
    e = cfg.eval
    samples = load_split(ctx.input("data").dir, e.split, on_error=cfg.data.on_error, tasks=e.tasks,
                         max_per_task=e.max_samples)
    path = model_dir(ctx.inputs["model"]) if "model" in ctx.inputs else None
    model, processor = build_model(cfg.model, seed=cfg.seed, path=path)
    model = fabric.to_device(model)  # every rank holds the whole model: generation needs no collective
    with fabric.autocast():
        preds = evaluate_samples(model, processor, cfg.model.family, samples, e, ctx.out_dir / "predictions.jsonl",
                                 seed=cfg.seed, system_prompt=cfg.model.system_prompt, rank=fabric.global_rank,
                                 world=fabric.world_size, gather=gather_objects,
                                 backend=make_backend(cfg, model, processor, str(path) if path else cfg.model.path,
                                                      rank=fabric.global_rank, world_size=fabric.world_size))
    if preds is None:  # not rank 0
        return None
    report = aggregate(preds)
    report.eval = {"model": cfg.model.name, "family": cfg.model.family, "answer_form": e.answer_form,
                   "cot": e.cot, "convention": cfg.model.family if e.convention == "auto" else e.convention,
                   "migician_y_rescale": e.migician_y_rescale, "split": e.split}
    atomic_write_json(ctx.out_dir / "metrics.json", report.to_json())
    fabric.log_dict(flat_metrics(report))
    for task, png, caption in write_gallery(samples, preds, ctx.out_dir / "gallery", e.gallery_per_task):
        log_image(fabric.loggers, f"gallery/{task}", png, caption=caption)
    return summarize(report)


def difference_pairs(spec, roles: list[str]) -> list[tuple[str, str]]:
    """`report.differences`: "adjacent" (each row against the one before it, in input order), "none", or
    a list of [a, b] input roles."""
    if spec == "adjacent":
        return list(zip(roles, roles[1:]))
    if spec in ("none", None):
        return []
    pairs = [tuple(p) for p in spec] if isinstance(spec, (list, tuple, ListConfig)) else None
    if pairs is None or any(len(p) != 2 or p[0] not in roles or p[1] not in roles for p in pairs):
        raise ConfigError(f"report.differences: expected 'adjacent', 'none' or a list of [a, b] pairs of this "
                          f"stage's input roles {roles}; got {spec!r}")
    return pairs  # type: ignore[return-value]


def check_differences(cfg: DictConfig, inputs: dict[str, str]) -> None:
    """Planning: `report.differences` names this stage's input roles (checked before anything runs)."""
    difference_pairs(cfg.report.get("differences", "adjacent"), list(inputs))


@stage_kind("report", reads=("report",), cache=False, checks=(check_differences,))
def report_stage(ctx: StageContext) -> dict:
    """A table of the evaluate inputs (one row per input role), written as markdown and CSV.

    With `report.table: <name>` the rows go into that paper table beside the paper's numbers;
    `report.rows` maps input roles to row labels and `report.beside` roles to paper rows
    (see `mig_eval.tables`). Under the table, the paired bootstrap difference of the rows named by
    `report.differences` (default: each row against the one before it), also in differences.json."""
    r = ctx.cfg.report
    paths = {role: Path(res.dir) / "metrics.json" for role, res in ctx.inputs.items()}
    labels = {role: role for role in paths}
    if r.get("table"):
        named = dict(r.get("rows") or {})
        unknown = sorted(set(named) - set(paths)) + sorted(set(r.get("beside") or {}) - set(paths))
        if unknown:
            raise ConfigError(f"report.rows / report.beside name input roles {unknown}; this stage's inputs "
                              f"are {sorted(paths)}")
        labels.update(named)
        ours = {labels[role]: read_json(p) for role, p in paths.items()}
        beside = {labels[role]: row for role, row in (r.get("beside") or {}).items()}
        table = write_table(r.table, ours, ctx.out_dir, beside)
    else:
        table = write_comparison(paths, ctx.out_dir, title=r.get("title", ctx.group))
    pairs = difference_pairs(r.get("differences", "adjacent"), list(paths))
    diffs = paired_differences({labels[role]: p.with_name("predictions.jsonl") for role, p in paths.items()},
                               [(labels[a], labels[b]) for a, b in pairs])
    atomic_write_json(ctx.out_dir / "differences.json", diffs)
    table += differences_markdown(diffs)
    if r.get("table"):
        (Path(ctx.run_dir) / f"{r.table}.md").write_text(table)
    out = Path(ctx.run_dir) / "table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print("\n" + table)
    return {"table": str(out)}
