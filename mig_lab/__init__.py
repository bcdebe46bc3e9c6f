"""MIG Lab's core, the bottom layer: typed configs, box text, the stage graph and its one registry of stage
kinds, the rank-aware runner, Fabric set-up, records and loggers. It imports no other mig_* package (the
research code lives in `mig_models`, `mig_data`, `mig_eval` and `mig_rl`; README "Layout").
"""

import os


def setup_env() -> None:
    """Environment every entry point sets first: no hub downloads, quiet tokenizers threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("WANDB_SILENT", "true")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def progress(iterable=None, **kwargs):
    """A tqdm progress bar that stays off where nothing reads it (non-TTY logs, other ranks)."""
    from tqdm import tqdm

    kwargs.setdefault("mininterval", 1.0)
    kwargs.setdefault("leave", False)
    if kwargs.pop("rank_zero", True) is False:
        kwargs["disable"] = True
    else:
        kwargs.setdefault("disable", None)  # None: on for a terminal, off for files and pipes
    return tqdm(iterable, **kwargs)
