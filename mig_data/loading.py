"""Reading a data stage's output: `<data dir>/<split>.json` in the MIG-Bench format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from mig_data.formats.mig_bench import read_mig_bench
from mig_data.schema import DataError, Sample


def load_split(data_dir: Path, split: str, on_error: str = "raise", tasks: Optional[list[str]] = None,
               max_per_task: Optional[int] = None) -> list[Sample]:
    path = Path(data_dir) / f"{split}.json"
    if not path.exists():
        available = sorted(p.stem for p in Path(data_dir).glob("*.json"))
        raise DataError(f"{path}: no '{split}' split in {data_dir} (available: {available})")
    samples = read_mig_bench(path, root=Path(data_dir), on_error=on_error, check_images=False).samples
    if tasks:
        unknown = sorted(set(tasks) - {s.task for s in samples})
        if unknown:
            raise DataError(f"{path}: requested task(s) {unknown} have no samples in this split")
        samples = [s for s in samples if s.task in tasks]
    if max_per_task is not None:
        seen: dict[str, int] = {}
        kept = []
        for s in samples:
            if seen.get(s.task, 0) < max_per_task:
                kept.append(s)
                seen[s.task] = seen.get(s.task, 0) + 1
        samples = kept
    return samples
