"""Metrics from per-sample predictions: per task, then aggregated as the papers do (the overall
score is the mean of the per-task scores), plus the groups the papers report."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from mig_data.schema import REFERENTIAL_TASKS, SPONTANEOUS_TASKS

THRESHOLDS = (0.3, 0.5, 0.7)
# coldstart_rl.txt, Table 3: in-domain (static diff, common object, region, referring grounding).
IN_DOMAIN_TASKS = ("diff", "common_object", "region", "refer_grounding")
OUT_OF_DOMAIN_TASKS = ("view_diff", "object_tracking", "multi_view", "group_grounding", "correspondence")


def task_metrics(preds: Iterable[dict]) -> dict[str, float]:
    """acc@t (IoU >= t), mean IoU, n, and the fraction of responses with a well-formed box."""
    preds = list(preds)
    n = len(preds)
    if n == 0:
        return {"n": 0}
    out: dict[str, float] = {f"acc@{t}": sum(p["iou"] >= t for p in preds) / n for t in THRESHOLDS}
    out["miou"] = sum(p["iou"] for p in preds) / n
    out["well_formed"] = sum(bool(p.get("well_formed")) for p in preds) / n
    with_image = [p for p in preds if p.get("gt_image") is not None]
    if with_image:
        out["image_acc"] = sum(p.get("image") == p["gt_image"] for p in with_image) / len(with_image)
    out["n"] = n
    return out


def _mean_over(tasks: dict[str, dict], names: Iterable[str], key: str) -> float | None:
    vals = [tasks[t][key] for t in names if t in tasks and key in tasks[t]]
    return sum(vals) / len(vals) if vals else None


def aggregate(preds: Iterable[dict]) -> dict:
    """Per-task metrics and the macro averages: overall, spontaneous/referential, in/out-of-domain."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for p in preds:
        by_task[p["task"]].append(p)
    tasks = {t: task_metrics(ps) for t, ps in sorted(by_task.items())}
    keys = [f"acc@{t}" for t in THRESHOLDS] + ["miou", "well_formed"]
    overall = {k: _mean_over(tasks, tasks.keys(), k) for k in keys}
    overall["n"] = sum(m["n"] for m in tasks.values())
    groups = {}
    for name, members in (("spontaneous", SPONTANEOUS_TASKS), ("referential", REFERENTIAL_TASKS),
                          ("in_domain", IN_DOMAIN_TASKS), ("out_of_domain", OUT_OF_DOMAIN_TASKS)):
        if any(t in tasks for t in members):
            groups[name] = {k: _mean_over(tasks, members, k) for k in keys}
    return {"overall": overall, "tasks": tasks, "groups": groups}
