"""What every reader shares: loading a JSON list (or JSON Lines) file, resolving and checking image
paths, and `data.on_error=skip` bookkeeping (skips are counted by reason and reported, never silent).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from PIL import Image, UnidentifiedImageError

from mig_data.schema import DataError, Sample

log = logging.getLogger("mig_data")

ON_ERROR = ("raise", "skip")


@dataclass
class LoadResult:
    samples: list[Sample]
    skipped: Counter = field(default_factory=Counter)  # reason -> count (data.on_error=skip)

    def report(self, source: str) -> None:
        """Log the skip counts (a warning: skipped records are never silent)."""
        if self.skipped:
            log.warning("%s: skipped %d bad record(s) (data.on_error=skip): %s", source,
                        sum(self.skipped.values()), format_skips(self.skipped))

    def extend(self, other: LoadResult) -> None:
        self.samples.extend(other.samples)
        self.skipped.update(other.skipped)


def format_skips(skipped: Counter) -> str:
    return ", ".join(f"{n} x {reason}" for reason, n in skipped.most_common())


class BadLine:
    """A JSON Lines line that did not parse: it fails (or is skipped) like any bad record."""

    def __init__(self, error: DataError):
        self.error = error


def read_json_file(path: str | Path) -> Any:
    """One JSON document; a missing, malformed or non-UTF-8 file fails naming the file (and line/column)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found", "missing_file")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}",
                        "malformed_json") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a UTF-8 text file ({e})", "malformed_json") from e


def load_json_records(path: str | Path) -> list[Any]:
    """The records of a `.json` file (one JSON list) or a `.jsonl` file (one record per line).

    A malformed `.json` file fails as a whole (line and column named); a malformed `.jsonl` line
    becomes a `BadLine` that fails, or is skipped and counted, with its record.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found", "missing_file")
    if path.suffix == ".jsonl":
        records: list[Any] = []
        with open(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    records.append(BadLine(DataError(
                        f"{path} line {lineno}: malformed JSON at column {e.colno}: {e.msg}", "malformed_json")))
        return records
    data = read_json_file(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}", "malformed_json")
    return data


def record_where(path: Path, index: int, rec: Any) -> str:
    """`<file> record <index> (id '<id>')`: how every message names a record."""
    rid = rec.get("id") if isinstance(rec, dict) else None
    return f"{path} record {index}" + (f" (id {rid!r})" if rid is not None else "")


def verify_image(path: str, where: str, mode: str = "header") -> None:
    """Check one image when the data is made, not mid-training: `header` opens it and runs PIL's `verify()`
    (the format identified, its structure and checksums intact, e.g. a PNG cut short; size not 0) without
    decoding; `full` decodes every pixel as training will."""
    try:
        with Image.open(path) as im:
            if min(im.size) <= 0:
                raise ValueError(f"size {im.size}")
            if mode == "full":
                im.load()
            else:
                im.verify()
    except FileNotFoundError:
        raise DataError(f"{where}: image not found: {path}", "missing_image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{where}: image {path} is unreadable or corrupt ({e})", "corrupt_image") from None


@lru_cache(maxsize=64)
def _resolved(root: str) -> str:
    return str(Path(root).resolve())  # once per root, not per image: resolve() costs 4 syscalls a path


def resolve_images(paths: Any, root: Path, where: str, check_exists: bool = True,
                   verify: str = "none") -> list[str]:
    """Absolute image paths (relative ones resolve against `root`), checked to exist and, with `verify`
    (header | full), to open or decode (`verify_image`)."""
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
        raise DataError(f"{where}: 'images' must be a non-empty list of paths, got {paths!r}", "wrong_type")
    base = _resolved(os.path.abspath(root))
    out = [p if os.path.isabs(p) else os.path.normpath(os.path.join(base, p)) for p in paths]
    if check_exists or verify != "none":
        for p in out:
            if not os.path.isfile(p):
                raise DataError(f"{where}: image not found: {p} (relative paths resolve against "
                                f"data.root={root})", "missing_image")
    if verify != "none":
        for p in out:
            verify_image(p, where, verify)
    return out


def require_keys(rec: Any, keys: Iterable[str], where: str, what: str) -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}", "wrong_type")
    missing = [k for k in keys if k not in rec]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}; {what}", "missing_key")
    return rec


def require_type(value: Any, types: type | tuple[type, ...], key: str, where: str) -> Any:
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):  # True is not a number
        names = " or ".join(t.__name__ for t in types)
        raise DataError(f"{where}: '{key}' must be {names}, got {type(value).__name__} {value!r:.60}", "wrong_type")
    return value


def convert_records(records: list[Any], convert: Callable[[Any, int], Optional[Sample]], source: str,
                    on_error: str = "raise") -> LoadResult:
    """Convert every record with `convert(record, index)`; a DataError raises, or with
    `on_error="skip"` is counted under its reason. The skip counts are logged at the end."""
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    result = LoadResult(samples=[])
    for i, rec in enumerate(records):
        try:
            if isinstance(rec, BadLine):
                raise rec.error
            sample = convert(rec, i)
        except DataError as e:
            if on_error != "skip":
                raise
            result.skipped[e.reason] += 1
            log.debug("skip: %s", e)
            continue
        if sample is not None:
            result.samples.append(sample)
    result.report(source)
    return result


TURN_ROLES = ("system", "user", "assistant")


def check_turns(turns: Any, n_images: int, where: str) -> list[dict]:
    """A valid `Sample.turns` list: roles in order (optional system, then user/assistant turns
    alternating, ending on an assistant turn), image offsets inside their text, one per image."""
    if not isinstance(turns, list) or not turns:
        raise DataError(f"{where}: 'turns' must be a non-empty list of {{role, content, image_offsets}}",
                        "wrong_type")
    out, n_seen = [], 0
    body = turns[1:] if isinstance(turns[0], dict) and turns[0].get("role") == "system" else turns
    for k, t in enumerate(turns):
        if not isinstance(t, dict) or t.get("role") not in TURN_ROLES or not isinstance(t.get("content"), str):
            raise DataError(f"{where}: turn {k} must be {{role: system|user|assistant, content: str}}, got {t!r:.80}",
                            "bad_conversation")
        offsets = t.get("image_offsets") or []
        if not isinstance(offsets, list) or not all(isinstance(o, int) and 0 <= o <= len(t["content"]) for o in offsets) \
                or offsets != sorted(offsets):
            raise DataError(f"{where}: turn {k} has bad image_offsets {offsets!r} (sorted character offsets "
                            f"into its content)", "bad_conversation")
        if offsets and t["role"] != "user":
            raise DataError(f"{where}: turn {k} ({t['role']}) holds images; only user turns may", "bad_conversation")
        n_seen += len(offsets)
        out.append({"role": t["role"], "content": t["content"], "image_offsets": list(offsets)})
    expected = ["user", "assistant"] * (len(body) // 2)
    if [t.get("role") for t in body] != expected or not body:
        raise DataError(f"{where}: turns must alternate user/assistant (after an optional system turn) and end "
                        f"with an assistant turn; got {[t.get('role') for t in turns]}", "bad_conversation")
    if n_seen != n_images:
        raise DataError(f"{where}: the turns place {n_seen} image(s) but the record has {n_images}",
                        "image_count_mismatch")
    return out
