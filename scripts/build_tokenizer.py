"""Rebuild the tiny model's committed byte-level BPE tokenizer files (mig_models/assets), or print its size:

    python scripts/build_tokenizer.py [--rebuild]
"""

from __future__ import annotations

import argparse

from mig_models.tokenizer import BPE_DIR, build_bpe_tokenizer, save_bpe_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help=f"retrain and rewrite {BPE_DIR}")
    args = parser.parse_args()
    if args.rebuild:
        save_bpe_files()
        print(f"wrote {BPE_DIR}")
    tok = build_bpe_tokenizer()
    print(f"vocabulary: {len(tok)} tokens")


if __name__ == "__main__":
    main()
