"""MIG Lab glue: typed configs, the stage graph, run records and loggers.

The research code lives in `mig_data`, `mig_models`, `mig_rl` and `mig_eval`; this package only
holds what every entry point shares.
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
