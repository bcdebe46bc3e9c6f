"""Every stage kind, in one table: its name in an experiment's `stages:` -> where it is declared.

A new stage kind is one function with `@stage_kind(...)` beside the code it runs, plus one line here.
Entries are "module:attribute" strings, imported when an experiment is planned, so this core package
imports no research package (the dependency direction of README "Layout").
"""

from __future__ import annotations

import importlib

from mig_lab.stage_kind import StageKind

STAGE_KINDS: dict[str, str] = {
    # data
    "make_data": "mig_data.stages:make_data",  # MIG-Synth or a published format -> Arrow splits
    "make_cot_data": "mig_data.cot.coldstart:make_cot_data",  # cold-start CoT: teacher answers + filter
    "make_trajectory_data": "mig_data.cot.trajectory_stages:make_trajectory_data",  # MIRG trajectories
    "make_free_form_data": "mig_data.cot.free_form_data:make_free_form_data",  # Migician stage-2 free-form turns
    # training
    "sft": "mig_rl.stages:sft_stage",
    "grpo": "mig_rl.stages:grpo_stage",
    "rejection_sample": "mig_rl.stages:rejection_sample_stage",
    "merge": "mig_rl.stages:merge_stage",
    # evaluation and tables
    "evaluate": "mig_eval.stages:evaluate_stage",
    "query_swap": "mig_eval.query_swap:query_swap_stage",  # does the box follow the query (tiny base)
    "random_guess": "mig_eval.table_rows:random_guess_stage",
    "combine_evals": "mig_eval.table_rows:combine_evals_stage",
    "report": "mig_eval.stages:report_stage",
}


def stage_kinds() -> dict[str, StageKind]:
    """Import and return every registered stage kind (checked: each entry is the kind it names)."""
    kinds = {}
    for name, where in STAGE_KINDS.items():
        module, attr = where.split(":")
        kind = getattr(importlib.import_module(module), attr, None)
        if not isinstance(kind, StageKind) or kind.name != name:
            raise TypeError(
                f"mig_lab/registry.py: {where} is not the stage kind {name!r} "
                f"(declare it with @stage_kind({name!r}, ...))"
            )
        kinds[name] = kind
    return kinds
