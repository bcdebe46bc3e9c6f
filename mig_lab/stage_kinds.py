"""Importing this module registers every stage kind."""

import mig_data.stages  # noqa: F401
import mig_eval.stages  # noqa: F401
import mig_rl.stages  # noqa: F401
