"""Entry point: `python run.py experiment=<name> [overrides]` (add -m for a Hydra multirun sweep).

Composes the typed config and runs the experiment's stages. Nothing else lives here.
"""

import sys

from mig_lab import setup_env

setup_env()

from mig_lab.ranks import is_external_worker, serve  # noqa: E402

if is_external_worker():  # a rank > 0 started by torchrun / srun: no Hydra, no run folder; serve rank 0
    serve()
    sys.exit(0)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from mig_lab.config import ConfigError, check_launcher_plugin, register_configs  # noqa: E402

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from mig_lab.runner import run

    run(cfg)


if __name__ == "__main__":
    try:
        check_launcher_plugin(sys.argv[1:])
    except ConfigError as e:
        sys.exit(f"error: {e}")
    main()
