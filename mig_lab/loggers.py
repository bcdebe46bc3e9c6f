"""Experiment loggers for Fabric: Weights & Biases (offline unless an API key is configured) or CSV.

W&B without an API key and without offline mode stops at `wandb.init` asking for a login; the
`auto` mode therefore picks offline by itself, so a run never prompts and never hangs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from lightning.fabric.loggers import CSVLogger, Logger
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def wandb_mode(requested: str) -> str:
    """Resolve `logger.mode`: auto means online only when credentials exist."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class WandbLogger(Logger):
    """A small Fabric logger over `wandb.init` (one W&B run per stage, grouped by experiment)."""

    def __init__(self, save_dir: Path, name: str, group: str, project: str, entity: Optional[str],
                 mode: str, tags: list[str], config: Optional[dict] = None):
        self._save_dir = Path(save_dir)
        self._name = name
        self._kwargs = dict(project=project, entity=entity, group=group, name=name, tags=tags,
                            mode=wandb_mode(mode), config=config, dir=str(self._save_dir))
        self._run = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self.experiment.id if self.experiment is not None else "disabled"

    @property
    def root_dir(self) -> str:
        return str(self._save_dir)

    @property
    @rank_zero_only
    def experiment(self):
        if self._run is None:
            import wandb

            self._save_dir.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(reinit="create_new", settings=wandb.Settings(silent=True),
                                   **self._kwargs)
            log.info("W&B run %s (%s mode) in %s", self._name, self._kwargs["mode"], self._save_dir)
        return self._run

    @rank_zero_only
    def log_hyperparams(self, params: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        self.experiment.config.update(dict(params), allow_val_change=True)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        self.experiment.log(dict(metrics), step=step)

    @rank_zero_only
    def log_image(self, key: str, path: Path, step: Optional[int] = None, caption: str = "") -> None:
        import wandb

        self.experiment.log({key: wandb.Image(str(path), caption=caption)}, step=step)

    @rank_zero_only
    def log_table(self, key: str, columns: list[str], rows: list[list[Any]], step: Optional[int] = None) -> None:
        import wandb

        self.experiment.log({key: wandb.Table(columns=columns, data=rows)}, step=step)

    @rank_zero_only
    def log_images(self, key: str, images: list, captions: list[str], step: Optional[int] = None) -> None:
        """PIL images as one W&B image panel (tables of this wandb version keep no pixels offline)."""
        import wandb

        self.experiment.log({key: [wandb.Image(im, caption=c) for im, c in zip(images, captions)]}, step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._run is not None:
            self._run.finish(exit_code=0 if status == "success" else 1)
            self._run = None


def make_loggers(cfg: DictConfig, save_dir: Path, name: str, group: str,
                 config: Optional[dict] = None) -> list[Logger]:
    """The loggers a stage passes to Fabric; CSV files always land in the stage folder too."""
    save_dir = Path(save_dir)
    loggers: list[Logger] = [CSVLogger(root_dir=str(save_dir), name="csv", version="")]
    if cfg.logger.kind == "wandb" and cfg.logger.mode != "disabled":
        loggers.append(WandbLogger(save_dir, name=name, group=group, project=cfg.logger.project,
                                   entity=cfg.logger.entity, mode=cfg.logger.mode,
                                   tags=list(cfg.logger.tags), config=config))
    return loggers


def log_image(loggers: list[Logger], key: str, path: Path, step: Optional[int] = None, caption: str = "") -> None:
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_image(key, path, step=step, caption=caption)


def log_images(loggers: list[Logger], key: str, images: list, captions: list[str], step: Optional[int] = None) -> None:
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_images(key, images, captions, step=step)


def log_table(loggers: list[Logger], key: str, columns: list[str], rows: list[list[Any]],
              step: Optional[int] = None) -> None:
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_table(key, columns, rows, step=step)
