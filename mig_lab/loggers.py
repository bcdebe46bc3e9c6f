"""Experiment loggers for Fabric: Weights & Biases (offline unless an API key is configured) and CSV.

W&B without an API key and without offline mode stops at `wandb.init` asking for a login; the
`auto` mode therefore picks offline by itself, so a run never prompts and never hangs.

Both keep a stage's history across a kill and resume: the CSV file is appended to (rows of the steps the
resumed run logs again, those past the killed run's checkpoint, are dropped first), and the W&B run is
resumed under the id the stage folder recorded.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import secrets
from pathlib import Path
from typing import Any, Mapping, Optional

from lightning.fabric.loggers import Logger
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


class HistoryCSVLogger(Logger):
    """`<root>/csv/metrics.csv`: one row per logged step (`step` plus the metrics; a column per key ever
    logged), flushed as it is logged, and kept across resumes. The first step a (resumed) run logs drops the
    file's rows from that step on, so after a kill and resume the file is the unbroken run's, row for row."""

    def __init__(self, root_dir: Path):
        self.path = Path(root_dir) / "csv" / "metrics.csv"
        self._rows: Optional[list[dict[str, Any]]] = None  # read on the first log
        self._keys: list[str] = []

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def root_dir(self) -> str:
        return str(self.path.parent.parent)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the resolved config is in the stage's records (run.json, checkpoints)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: Optional[int] = None) -> None:
        row = {"step": step, **metrics}
        if self._rows is None:  # first row of this process: keep the history before it
            old = []
            if self.path.exists():
                with open(self.path, newline="") as f:
                    old = list(csv.DictReader(f))
            self._rows = [r for r in old if step is None or r.get("step") in ("", None) or int(r["step"]) < step]
            self._keys = list(dict.fromkeys(k for r in old for k in r))
            self._rows.append(row)
            self._keys = list(dict.fromkeys([*self._keys, *row]))
            return self._rewrite()
        self._rows.append(row)
        if any(k not in self._keys for k in row):
            self._keys = list(dict.fromkeys([*self._keys, *row]))
            return self._rewrite()
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self._keys).writerow(row)

    def _rewrite(self) -> None:
        from mig_lab.records import atomic_write_text

        text = io.StringIO()
        writer = csv.DictWriter(text, self._keys)
        writer.writeheader()
        writer.writerows(self._rows or [])
        atomic_write_text(self.path, text.getvalue())

    def finalize(self, status: str) -> None:
        pass


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
            id_file = self._save_dir / "wandb_run_id"  # a resumed stage continues its W&B run
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            self._run = wandb.init(reinit="create_new", settings=wandb.Settings(silent=True), id=run_id,
                                   resume="allow", **self._kwargs)
            if not id_file.exists():
                from mig_lab.records import atomic_write_text

                atomic_write_text(id_file, run_id + "\n")
            log.info("W&B run %s (%s mode, id %s) in %s", self._name, self._kwargs["mode"], run_id, self._save_dir)
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
    loggers: list[Logger] = [HistoryCSVLogger(save_dir)]
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
