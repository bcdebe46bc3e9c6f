"""Comparison tables of evaluation runs (markdown and CSV)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mig_eval.bootstrap import paired_difference, plus_minus, sample_scores
from mig_eval.evaluate import read_predictions
from mig_lab.records import atomic_write_text, read_json

COLUMNS = ("acc@0.5", "miou", "well_formed")


def _cell(entry: dict, metric: str) -> str:
    return plus_minus(entry.get(metric), (entry.get("ci95") or {}).get(metric))


def comparison_rows(rows: dict[str, Path]) -> tuple[list[str], list[list[str]]]:
    metrics = {name: read_json(path) for name, path in rows.items()}
    tasks = sorted({t for m in metrics.values() for t in m["tasks"]})
    header = ["model"] + [f"overall {c}" for c in COLUMNS] + [f"{t} acc@0.5" for t in tasks]
    body = []
    for name, m in metrics.items():
        row = [name] + [_cell(m["overall"], c) for c in COLUMNS]
        row += [_cell(m["tasks"].get(t, {}), "acc@0.5") for t in tasks]
        body.append(row)
    return header, body


def write_comparison(rows: dict[str, Path], out_dir: Path, title: str = "") -> str:
    """Write table.md and table.csv (percentages) into out_dir; returns the markdown."""
    header, body = comparison_rows(rows)
    md = [f"### {title}", ""] if title else []
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in body]
    text = "\n".join(md) + "\n"
    atomic_write_text(Path(out_dir) / "table.md", text)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *body])
    atomic_write_text(Path(out_dir) / "table.csv", buf.getvalue())
    return text


def paired_differences(preds: dict[str, Path], pairs: list[tuple[str, str]], metric: str = "acc@0.5") -> list[dict]:
    """For each (a, b): b - a of the macro-averaged `metric` on the samples both rows scored, with its
    paired 95% bootstrap interval (`mig_eval.bootstrap.paired_difference`); pairs sharing no sample
    are listed with the reason instead."""
    scores = {label: sample_scores(read_predictions(path).values(), metric) for label, path in preds.items()}
    out = []
    for a, b in pairs:
        try:
            out.append({"a": a, "b": b, "metric": metric, **paired_difference(scores[a], scores[b])})
        except ValueError as e:
            out.append({"a": a, "b": b, "metric": metric, "skipped": str(e)})
    return out


def differences_markdown(diffs: list[dict]) -> str:
    """The differences as a markdown table (percent points)."""
    if not diffs:
        return ""
    lines = ["", "Paired differences (b - a, the same samples, 95% bootstrap interval, percent points):", "",
             "| a | b | b - a | 95% CI | samples | |", "|---|---|---|---|---|---|"]
    for d in diffs:
        if "skipped" in d:
            lines.append(f"| {d['a']} | {d['b']} | - | - | 0 | {d['skipped']} |")
            continue
        lo, hi = (100 * v for v in d["ci95"])
        verdict = "beyond noise" if d["beyond_noise"] else "within noise"
        lines.append(f"| {d['a']} | {d['b']} | {100 * d['diff']:+.2f} | [{lo:+.2f}, {hi:+.2f}] | {d['n']} | {verdict} |")
    return "\n".join(lines) + "\n"
