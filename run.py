"""Entry point: `python run.py experiment=<name> [overrides]` (add -m for a Hydra multirun sweep).

Composes the typed config and runs the experiment's stages. Nothing else lives here.
"""

from mig_lab import setup_env

setup_env()

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from mig_lab.config import register_configs  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from mig_lab.runner import run

    run(cfg)


if __name__ == "__main__":
    main()
