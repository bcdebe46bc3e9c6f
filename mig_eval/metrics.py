"""Metrics from per-sample predictions: per task, then aggregated as the papers do (the overall
score is the mean of the per-task scores, not of the samples), plus the groups the papers report.

Groups (each a mean over its tasks' scores):
  * spontaneous / referential: migician.txt Sec. 3 and Fig. 2 (`mig_data.schema`);
  * in-domain / out-of-domain: coldstart_rl.txt Table 3. Its caption lists static diff, common
    object, region and referring grounding as in-domain and robust diff, object tracking, multi-view,
    group grounding and correspondence as out-of-domain. The caption omits `reasoning`, but the
    table's numbers only add up with reasoning out-of-domain (Qwen2.5-VL-7B: the mean of the six
    out-of-domain Table 2 scores incl. reasoning 3.96 is 10.82 as printed; without it 12.19), and
    AVG = (4 x in + 6 x out) / 10. So `reasoning` counts as out-of-domain here.
Difficulty tiers (migician.txt Sec. 7.3, Table 7) are instance-level accuracies within each tier
(the paper prints the instance count per tier); see `difficulty_tier` for where tiers come from.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import MISSING, dataclass, fields
from typing import Any, Iterable, Mapping, Optional

from mig_data.schema import REFERENTIAL_TASKS, SPONTANEOUS_TASKS
from mig_eval.bootstrap import sample_scores, task_intervals
from mig_lab.boxes import iou

THRESHOLDS = (0.3, 0.5, 0.7)
CI_METRICS = ("acc@0.5", "miou")  # metrics that get a 95% bootstrap interval (`ci95`, mig_eval.bootstrap)
IN_DOMAIN_TASKS = ("diff", "common_object", "region", "refer_grounding")
OUT_OF_DOMAIN_TASKS = ("view_diff", "object_tracking", "multi_view", "group_grounding", "correspondence",
                       "reasoning")
GROUPS = {"spontaneous": SPONTANEOUS_TASKS, "referential": REFERENTIAL_TASKS,
          "in_domain": IN_DOMAIN_TASKS, "out_of_domain": OUT_OF_DOMAIN_TASKS}
TIERS = ("easy", "medium", "hard")


def difficulty_tier(meta: Mapping[str, Any]) -> Optional[str]:
    """The difficulty tier of a sample, where its inputs exist; None otherwise.

    * `meta["difficulty"]` (easy | medium | hard) wins: MIG-Bench's own tiers need the per-instance
      results of four baselines (migician.txt 7.3), which the public release does not ship; a user
      who has them stores them there.
    * MIG-Synth records its difficulty inputs, `meta["num_images"]` and `meta["distractors"]`
      (objects in the sample other than the target). Our rule keeps the paper's image-count
      thresholds and replaces "how many baselines fail" by the distractor load per image, the
      synthetic cause of failure:
        hard   if num_images > 4, or num_images == 4 and distractors > 2 per image;
        easy   if num_images < 4 and distractors <= 1 per image;
        medium otherwise.
    """
    tier = meta.get("difficulty")
    if isinstance(tier, str) and tier in TIERS:
        return tier
    n, d = meta.get("num_images"), meta.get("distractors")
    if not isinstance(n, int) or not isinstance(d, int) or n < 1:
        return None
    per_image = d / n
    if n > 4 or (n == 4 and per_image > 2):
        return "hard"
    if n < 4 and per_image <= 1:
        return "easy"
    return "medium"


PICKS = ("target", "other", "none")


def picked_object(meta: Mapping[str, Any], answer: Optional[list[float]], answer_image: Optional[int],
                  box: Optional[list[float]], box_image: Optional[int]) -> Optional[str]:
    """Which object a predicted box lands on (IoU >= 0.5), from the sample's scene graph:
    "target", "other" (a distractor, or an object of another image) or "none" (no object, no box).
    None where it cannot be told: no scene graph (external data), or an answer that is not a whole
    object (a region crop, an object part, the empty place of a removed object)."""
    scenes, oid = meta.get("scenes"), meta.get("target_oid")
    image = answer_image or 0
    if not scenes or oid is None or answer is None or image >= len(scenes):
        return None
    target = next((o for o in scenes[image]["objects"] if o["oid"] == oid), None)
    if target is None or iou(target["box"], answer) < 0.9:
        return None
    if box is None or box_image is None or not 0 <= box_image < len(scenes):
        return "none"
    overlap, best_oid = max(((iou(o["box"], box), o["oid"]) for o in scenes[box_image]["objects"]), default=(0.0, None))
    if overlap < 0.5:
        return "none"
    return "target" if best_oid == oid and box_image == image else "other"


def task_metrics(preds: Iterable[dict]) -> dict[str, float]:
    """acc@t (IoU >= t), mean IoU, n, the fraction of responses with a well-formed box, and (scene-graph
    samples) the fractions of boxes on the target, on another object, on no object."""
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
    picks = [p["picked"] for p in preds if p.get("picked") is not None]
    if picks:  # where the box went: the named object, another object, or no object
        out.update({f"picked_{k}": picks.count(k) / len(picks) for k in PICKS})
    out["n"] = n
    return out


def _mean_over(tasks: dict[str, dict], names: Iterable[str], key: str) -> float | None:
    vals = [tasks[t][key] for t in names if t in tasks and key in tasks[t]]
    return sum(vals) / len(vals) if vals else None


@dataclass
class EvalReport:
    """One evaluation's metrics, as `metrics.json` holds them (`to_json`, `from_json`)."""

    overall: dict[str, Any]  # macro averages over the tasks present: acc@t, miou, well_formed; n, tasks
    tasks: dict[str, dict[str, Any]]  # task -> acc@t, miou, well_formed, n (and picked-object shares)
    groups: dict[str, dict[str, Any]]  # spontaneous / referential -> macro averages over their tasks
    tiers: dict[str, dict[str, Any]]  # easy / medium / hard -> instance metrics (samples with a tier)
    eval: Optional[dict[str, Any]] = None  # what was evaluated, and how (model, answer form, convention...)
    scorer: Optional[dict[str, Any]] = None  # `mig_eval.score` on external predictions: files and rules

    def to_json(self) -> dict[str, Any]:
        out = {"overall": self.overall, "tasks": self.tasks, "groups": self.groups, "tiers": self.tiers}
        out.update({k: v for k, v in (("eval", self.eval), ("scorer", self.scorer)) if v is not None})
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> EvalReport:
        return cls(**{f.name: d.get(f.name, {} if f.default is MISSING else f.default) for f in fields(cls)})


def add_intervals(preds: list[dict], overall: dict, tasks: dict[str, dict], groups: dict[str, dict]) -> None:
    """Each task's, each group's and the overall score get `ci95: {metric: [lo, hi]}` (stratified
    percentile bootstrap over the samples, seeded: the same predictions give the same interval)."""
    for metric in CI_METRICS:
        intervals = task_intervals(sample_scores(preds, metric), {g: m["tasks"] for g, m in groups.items()})
        for name, ci in intervals.items():
            section, _, key = name.rpartition(":")
            target = overall if name == "overall" else (groups[key] if section == "group" else tasks[name])
            target.setdefault("ci95", {})[metric] = ci


def aggregate(preds: Iterable[dict]) -> EvalReport:
    """Per-task metrics; the macro averages (overall and each group, with the tasks present); and
    per-tier instance accuracies for predictions that carry a `tier`."""
    preds = list(preds)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for p in preds:
        by_task[p["task"]].append(p)
    tasks = {t: task_metrics(ps) for t, ps in sorted(by_task.items())}
    keys = [f"acc@{t}" for t in THRESHOLDS] + ["miou", "well_formed"]
    overall: dict[str, Any] = {k: _mean_over(tasks, tasks.keys(), k) for k in keys}
    overall["n"] = sum(m["n"] for m in tasks.values())
    overall["tasks"] = len(tasks)
    groups = {}
    for name, members in GROUPS.items():
        present = [t for t in members if t in tasks]
        if present:
            groups[name] = {**{k: _mean_over(tasks, present, k) for k in keys}, "tasks": present}
    tiers = {t: task_metrics(p for p in preds if p.get("tier") == t) for t in TIERS}
    tiers = {t: m for t, m in tiers.items() if m["n"]}
    add_intervals(preds, overall, tasks, groups)
    return EvalReport(overall=overall, tasks=tasks, groups=groups, tiers=tiers)
