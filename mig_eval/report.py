"""Comparison tables of evaluation runs (markdown and CSV)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from mig_lab.records import atomic_write_text, read_json

COLUMNS = ("acc@0.5", "miou", "well_formed")


def _fmt(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def comparison_rows(rows: dict[str, Path]) -> tuple[list[str], list[list[str]]]:
    metrics = {name: read_json(path) for name, path in rows.items()}
    tasks = sorted({t for m in metrics.values() for t in m["tasks"]})
    header = ["model"] + [f"overall {c}" for c in COLUMNS] + [f"{t} acc@0.5" for t in tasks]
    body = []
    for name, m in metrics.items():
        row = [name] + [_fmt(m["overall"].get(c)) for c in COLUMNS]
        row += [_fmt(m["tasks"].get(t, {}).get("acc@0.5")) for t in tasks]
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
