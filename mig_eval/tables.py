"""Paper-style tables: our evaluation results in a paper table's layout, beside the paper's numbers.

The papers' numbers are transcribed into `mig_eval/paper_tables/<name>.json` (`--list` shows them):
migician Tables 1, 5, 6, 7, 9, 10, 11; coldstart_rl Tables 2, 3, 9, 10; mirg_rl Tables 1, 2, 3.
Each file holds the caption, the columns (a label and the metric `key` this codebase fills it from:
`task:<task>`, `overall` (mean of the per-task scores), `group:<spontaneous|referential|in_domain|
out_of_domain>`, `tier:<easy|medium|hard>`, or null for a column we do not compute, e.g. MuirBench),
the sections and rows as printed (`setting` for tables with a settings column, `starred` for
values the paper marks with *), and notes on the paper's own inconsistencies. Values are Acc@0.5 in
percent, as printed.

Command line (run folders, evaluate-stage folders or metrics.json files; `LABEL=PATH` names a row):

    python scripts/paper_table.py migician_table1 outputs/runs/eval_migbench/<time>      # every evaluate stage
    python scripts/paper_table.py migician_table1 "tiny base=outputs/cache/evaluate-<key>" --out tables/
    python scripts/paper_table.py migician_table1 ours=metrics.json --beside ours=Qwen2-VL-7B

As a stage (the `report` kind): an experiment names the table and maps its evaluate inputs to rows:

    report:
      table: migician_table1               # a file in mig_eval/paper_tables
      rows: {base: "tiny base", sft: "tiny + SFT"}   # input role -> row label (default: the role)
      beside: {sft: "Qwen2-VL-7B"}          # optional: input role -> paper row it is printed under
                                            # (first row of that name, or "name (setting)", e.g.
                                            # "Qwen2-VL-7B (All+mCoT)" in migician_table10)
    stages:
      table: {kind: report, inputs: {base: eval_base, sft: eval_sft}}

Both write `<name>.md` and `<name>.csv` (the CSV has a `source` column: paper | ours). Our rows come
right under the paper row named in `beside`, else in a final "this codebase" section. When a run
covers fewer tasks than the paper's average, a footnote says over how many tasks ours is taken.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional

from mig_eval.bootstrap import plus_minus
from mig_lab.config import ConfigError
from mig_lab.records import atomic_write_text

TABLE_DIR = Path(__file__).resolve().parent / "paper_tables"


def list_tables() -> list[str]:
    return sorted(p.stem for p in TABLE_DIR.glob("*.json"))


def load_table(name: str) -> dict:
    path = TABLE_DIR / f"{name}.json"
    if not path.exists():
        raise ConfigError(f"no paper table named {name!r}; known: {list_tables()}")
    return json.loads(path.read_text())


def _entry(metrics: dict, key: str) -> dict:
    if key == "overall":
        return metrics.get("overall", {})
    section, _, name = key.partition(":")
    return metrics.get({"task": "tasks", "group": "groups", "tier": "tiers"}.get(section, ""), {}).get(name, {})


def metric_value(metrics: dict, key: Optional[str], metric: str) -> Optional[float]:
    """A column's value (percent) from a metrics.json dict; None where absent or not computed."""
    v = _entry(metrics, key).get(metric) if key else None
    return None if v is None else 100.0 * v


def metric_cell(metrics: dict, key: Optional[str], metric: str) -> str:
    """Our cell: 'value ± half-width' of its 95% bootstrap interval (percent) where metrics.json has one."""
    entry = _entry(metrics, key) if key else {}
    return plus_minus(entry.get(metric), (entry.get("ci95") or {}).get(metric))


def row_key(row: dict) -> str:
    """How `beside` names a paper row: its name, or "name (setting)" in tables with a settings column
    (migician Table 10 lists each model once per answering form)."""
    return f"{row['name']} ({row['setting']})" if row.get("setting") else row["name"]


def answer_setting(metrics: dict) -> str:
    """How a run answered, in Table 10's words (Polling | All, +CoT | +mCoT), from metrics["eval"]."""
    e = metrics.get("eval") or {}
    if not e or e.get("setting"):  # a stage may state its setting outright (e.g. "Random Guess")
        return str(e.get("setting", ""))
    form = {"polling": "Polling", "all": "All"}.get(e.get("answer_form"), "")
    return form + {"single": "+CoT", "multi": "+mCoT"}.get(e.get("cot"), "")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return str(v) if isinstance(v, int) else f"{v:.2f}"


def table_rows(name: str, ours: dict[str, dict], beside: Optional[dict[str, str]] = None
               ) -> tuple[dict, list[str], list[list[str]], list[str]]:
    """(table, header, rows, footnotes). Rows are [source, name, (setting,) *values]; a section
    title is a row with source 'section'."""
    table = load_table(name)
    rows = [r for s in table["sections"] for r in s["rows"]]
    place: dict[str, int] = {}  # our label -> position (in `rows`) of the paper row it goes under
    for label, target in (beside or {}).items():
        k = next((i for i, r in enumerate(rows) if target in (r["name"], row_key(r))), None)
        if k is None:
            raise ConfigError(f"table {name}: 'beside' names paper row {target!r}, which is not in it; its rows "
                              f"are {[row_key(r) for r in rows]}")
        place[label] = k
    setting = table.get("setting_label")
    header = ["source", "model"] + ([setting] if setting else []) + [c["label"] for c in table["columns"]]
    keys = [c["key"] for c in table["columns"]]

    def our_setting(label: str) -> list[str]:
        if not setting:
            return []
        if table.get("setting_is_answer_form"):  # Table 10: the setting is how the run answered
            return [answer_setting(ours[label])]
        # otherwise (e.g. Table 9's CS RS RL flags) ours is the same recipe as the paper row it goes under
        return [rows[place[label]].get("setting", "") if label in place else ""]

    def our_row(label: str) -> list[str]:
        vals = [metric_cell(ours[label], k, table["metric"]) for k in keys]
        return ["ours", label] + our_setting(label) + vals

    body: list[list[str]] = []
    k = 0
    for sec in table["sections"]:
        if sec["title"]:
            body.append(["section", sec["title"]] + ([""] if setting else []) + [""] * len(keys))
        for r in sec["rows"]:
            vals = [_fmt(v) + ("*" if i in r.get("starred", []) else "") for i, v in enumerate(r["values"])]
            body.append(["paper", r["name"]] + ([r.get("setting", "")] if setting else []) + vals)
            body += [our_row(label) for label, at in place.items() if at == k and label in ours]
            k += 1
    rest = [label for label in ours if label not in place]
    if rest:
        body.append(["section", "this codebase"] + ([""] if setting else []) + [""] * len(keys))
        body += [our_row(label) for label in rest]
    notes = list(table.get("notes", []))
    for label, m in ours.items():
        n_tasks = m.get("overall", {}).get("tasks")
        if "overall" in keys and n_tasks is not None and n_tasks < 10:
            notes.append(f"{label}: the average is over the {n_tasks} task(s) evaluated, not MIG-Bench's 10.")
    return table, header, body, notes


def render_markdown(table: dict, header: list[str], body: list[list[str]], notes: list[str]) -> str:
    lines = [f"### {table['paper']} {table['table']}: {table['caption']}", ""]
    lines += ["| " + " | ".join(header[1:]) + " |", "|" + "---|" * (len(header) - 1)]
    for row in body:
        cells = row[1:]
        if row[0] == "section":
            cells = [f"**{c}**" if c else "" for c in cells]
        elif row[0] == "ours":
            cells = [f"**{c}**" if c and c != "-" else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Paper rows as printed; **bold** rows are this codebase's results, with the half-width of "
                 "their 95% bootstrap interval (± ...). * = the paper's human score on a random 20% sample.")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_table(name: str, ours: dict[str, dict], out_dir: Path, beside: Optional[dict[str, str]] = None) -> str:
    """Write `<out_dir>/<name>.md` and `.csv`; returns the markdown."""
    table, header, body, notes = table_rows(name, ours, beside)
    md = render_markdown(table, header, body, notes)
    atomic_write_text(Path(out_dir) / f"{name}.md", md)
    buf = io.StringIO()
    csv.writer(buf).writerows([header] + [r for r in body if r[0] != "section"])
    atomic_write_text(Path(out_dir) / f"{name}.csv", buf.getvalue())
    return md


def metrics_from_path(path: Path) -> dict[str, dict]:
    """label -> metrics from a metrics.json, a stage folder holding one, or a run folder (stages.json:
    one row per evaluate stage, labelled by stage name)."""
    path = Path(path)
    if path.is_file():
        return {path.parent.name if path.name == "metrics.json" else path.stem: json.loads(path.read_text())}
    if (path / "metrics.json").exists():
        return {path.name: json.loads((path / "metrics.json").read_text())}
    if (path / "stages.json").exists():
        stages = json.loads((path / "stages.json").read_text())
        found = {name: json.loads((Path(s["dir"]) / "metrics.json").read_text())
                 for name, s in stages.items() if s["kind"] == "evaluate" and (Path(s["dir"]) / "metrics.json").exists()}
        if found:
            return found
    raise ConfigError(f"{path}: not a metrics.json, an evaluate-stage folder or a run folder with evaluate stages")
