"""Sampling noise of an evaluation: percentile bootstrap intervals of per-task scores and of their
macro average, and the paired bootstrap of the difference of two rows scored on the same samples.

Every table averages per-task scores (the mean over tasks, not samples), so one replicate resamples
each task's samples with replacement, separately (stratified by task), and recomputes every task's
score and their mean. The 95% interval is the 2.5th and 97.5th percentile of `n_boot` replicates
(Efron's percentile interval). A difference of two rows is paired: one replicate draws the same
sample indices for both rows, so what the two rows share (an easy sample, a hard one) cancels.
The generator is seeded, so the same predictions always give the same interval.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
SEED = 0


Scores = Mapping[str, list[tuple[str, float]]]  # task -> [(sample id, score)] in prediction order


def sample_scores(preds: Iterable[dict], metric: str) -> dict[str, list[tuple[str, float]]]:
    """task -> [(sample id, that sample's score)]: 1/0 for acc@t (IoU >= t), the IoU for miou."""
    out: dict[str, list[tuple[str, float]]] = {}
    for p in preds:
        key = str(p.get("id", p.get("index")))
        if metric == "miou":
            score = float(p["iou"])
        elif metric.startswith("acc@"):
            score = float(p["iou"] >= float(metric[4:]))
        else:
            raise ValueError(f"no per-sample score for metric {metric!r}; known: miou, acc@<t>")
        out.setdefault(p["task"], []).append((key, score))
    return out


def _by_id(scores: list[tuple[str, float]], task: str) -> dict[str, float]:
    out = dict(scores)
    if len(out) != len(scores):
        raise ValueError(f"task {task!r}: a sample id occurs twice in one evaluation; a paired difference "
                         f"matches samples by id")
    return out


def replicate_means(scores: list[np.ndarray], n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """[n_boot, T] per-task means of `n_boot` stratified resamples (task t's samples: scores[t], [N_t])."""
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(scores)))
    for t, s in enumerate(scores):
        idx = rng.integers(0, len(s), size=(n_boot, len(s)))  # [B, N_t]
        out[:, t] = s[idx].mean(axis=1)
    return out


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """[lo, hi]: the central `level` share of `values` ([B])."""
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return [float(lo), float(hi)]


def task_intervals(by_task: Scores, groups: Optional[Mapping[str, Iterable[str]]] = None,
                   n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> dict[str, list[float]]:
    """Intervals of each task's mean, of the macro average ("overall") and of each group's average
    (over its tasks present), all from the same replicates."""
    tasks = sorted(t for t in by_task if by_task[t])
    if not tasks:
        return {}
    reps = replicate_means([np.array([v for _, v in by_task[t]]) for t in tasks], n_boot, seed)  # [B, T]
    out = {t: percentile_interval(reps[:, i], level) for i, t in enumerate(tasks)}
    out["overall"] = percentile_interval(reps.mean(axis=1), level)
    for name, members in (groups or {}).items():
        wanted = set(members)
        cols = [i for i, t in enumerate(tasks) if t in wanted]
        if cols:
            out[f"group:{name}"] = percentile_interval(reps[:, cols].mean(axis=1), level)
    return out


def paired_difference(a: Scores, b: Scores,
                      n_boot: int = N_BOOT, seed: int = SEED, level: float = LEVEL) -> dict:
    """b - a of the macro average over the tasks both rows scored, on the samples both scored
    (matched by id), with its paired percentile interval. `beyond_noise`: the interval excludes 0."""
    tasks = sorted(set(a) & set(b))
    diffs = []
    for t in tasks:
        at, bt = _by_id(a[t], t), _by_id(b[t], t)
        ids = sorted(set(at) & set(bt))
        if ids:
            diffs.append(np.array([bt[i] - at[i] for i in ids]))  # [N_t]
    if not diffs:
        raise ValueError("the two rows share no scored sample (same task and sample id); a paired difference "
                         "needs both evaluated on the same samples")
    reps = replicate_means(diffs, n_boot, seed).mean(axis=1)  # [B]
    lo, hi = percentile_interval(reps, level)
    return {"diff": float(np.mean([d.mean() for d in diffs])), "ci95": [lo, hi], "beyond_noise": lo > 0 or hi < 0,
            "tasks": len(diffs), "n": int(sum(len(d) for d in diffs))}


def plus_minus(value: Optional[float], interval: Optional[list[float]], scale: float = 100.0) -> str:
    """'12.50 ± 4.10' (the interval's half-width), in percent by default; '12.50' without an interval."""
    if value is None:
        return "-"
    if not interval:
        return f"{scale * value:.2f}"
    return f"{scale * value:.2f} ± {scale * (interval[1] - interval[0]) / 2:.2f}"
