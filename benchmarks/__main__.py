"""`python -m benchmarks` (`make bench`): run every `benchmarks/bench_*.py` (its `main()`), in name
order, or only those named: `python -m benchmarks eval`. Each benchmark measures its own baseline in
the same run and prints ratios against it; speed targets live here, never in tests.

A benchmark's `main()` may return a headline (`"sft vs trl: 1.30x"`); the headlines are printed again at
the end, the GRPO one last, so the final line of `make bench` is `grpo vs trl: X.XXx`."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in argv]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
        return 2
    failed, headlines = [], {}
    for name in wanted or names:
        print(f"== {name}", flush=True)
        t0 = time.time()
        try:
            headline = importlib.import_module(f"benchmarks.{name}").main()
            if headline:
                headlines[name] = headline
        except Exception as e:  # report and go on: one broken benchmark must not hide the others
            failed.append(name)
            print(f"!! {name} failed: {type(e).__name__}: {e}", flush=True)
        print(f"== {name} done in {time.time() - t0:.1f}s\n", flush=True)
    if headlines:
        print("== summary" + (f" ({len(failed)} failed: {failed})" if failed else ""))
        for name in sorted(headlines, key=lambda n: n == "bench_grpo"):
            print(headlines[name], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
