"""Loading a large ShareGPT source: parse + validate the JSON every run (baseline) vs memory-map
the Arrow copy the make_data stage writes once (`load_split`).

    python -m benchmarks loading                       # 50k MGrounding-style records
    MIG_BENCH_RECORDS=630000 python -m benchmarks loading   # MGrounding-630k's size

Records are two-turn, 2-4 images each (the image files are shared, so only parsing is timed;
the baseline checks that the images exist, as make_data does). The benchmark fails if the two
paths give different samples. Prints records/s of both and their ratio.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path


def synthetic_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        k = rng.randint(2, 4)
        x1, y1 = rng.randint(0, 500), rng.randint(0, 500)
        box = f"<|box_start|>({x1},{y1}),({x1 + rng.randint(1, 499)},{y1 + rng.randint(1, 499)})<|box_end|>"
        records.append({"id": f"rec-{i}", "images": [f"img/{j}.png" for j in range(k)], "conversations": [
            {"from": "human", "value": "<image>\n" * k + f"Find the {rng.choice(['red', 'blue'])} circle."},
            {"from": "gpt", "value": f"Image-{rng.randint(1, k)}: {box}"},
            {"from": "human", "value": "And its colour?"},
            {"from": "gpt", "value": rng.choice(["red", "blue"])}]})
    return records


def main() -> None:
    from mig_lab import setup_env

    setup_env()
    from PIL import Image

    from mig_data.formats.sharegpt import read_sharegpt
    from mig_data.loading import load_split, save_split

    n = int(os.environ.get("MIG_BENCH_RECORDS", "50000"))
    with tempfile.TemporaryDirectory(prefix="bench_loading_") as tmp:
        tmp = Path(tmp)
        (tmp / "img").mkdir()
        for j in range(4):
            Image.new("RGB", (32, 32)).save(tmp / "img" / f"{j}.png")
        path = tmp / "mg.json"
        path.write_text(json.dumps(synthetic_records(n)))
        print(f"{n} records, {path.stat().st_size / 1e6:.1f} MB of JSON")

        t0 = time.perf_counter()
        parsed = read_sharegpt(path).samples
        t_parse = time.perf_counter() - t0
        t0 = time.perf_counter()
        save_split(parsed, tmp / "stage", "train", write_json=False)
        t_save = time.perf_counter() - t0
        t0 = time.perf_counter()
        loaded = load_split(tmp / "stage", "train")
        t_load = time.perf_counter() - t0
        if [s.to_dict() for s in loaded] != [s.to_dict() for s in parsed]:
            raise AssertionError("the Arrow copy does not give back the parsed samples")
        print(f"parse + validate JSON : {t_parse:7.2f} s  ({n / t_parse:9.0f} records/s)  [baseline, every run]")
        print(f"write Arrow copy      : {t_save:7.2f} s  (once, in make_data)")
        print(f"load_split from Arrow : {t_load:7.2f} s  ({n / t_load:9.0f} records/s)  "
              f"-> {t_parse / t_load:.1f}x the baseline")
