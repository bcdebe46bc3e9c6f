"""Importing this module registers every stage kind."""

import mig_data.cot.stages  # noqa: F401
import mig_data.cot.trajectory_stages  # noqa: F401
import mig_data.stages  # noqa: F401
import mig_eval.stages  # noqa: F401
import mig_eval.table_rows  # noqa: F401
import mig_rl.stages  # noqa: F401
