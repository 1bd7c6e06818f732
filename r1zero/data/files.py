"""Loading rows of a dataset from a local file, a local folder, or the Hugging Face hub.

Every loader returns a plain ``list[dict]`` (one dict per row, the dataset's own fields), so tasks,
tests and users handle one shape. Local files are read without the ``datasets`` library where we can
(jsonl/json), so the common offline path has no heavy dependency; parquet and csv go through
``pyarrow`` (csv columns get the types it infers, as ``datasets`` gives them), hub ids through ``datasets``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data source that cannot be read; the message is one line naming the source and the fix."""


_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: each line must be a JSON object with the task's fields")
            rows.append(row)
    return rows


def _read_json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        # Many ".json" files are really JSON lines.
        try:
            return _read_jsonl(path)
        except DataError:
            raise DataError(f"{path}: not valid JSON ({e.msg}); write a list of objects or JSON lines") from None
    if isinstance(data, dict):
        # {"train": [...]} or {"data": [...]}
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) == 1:
            data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of objects (one per row)")
    return data


def _read_parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def _read_csv(path: Path) -> list[dict]:
    import pyarrow
    import pyarrow.csv

    try:
        return pyarrow.csv.read_csv(path).to_pylist()
    except pyarrow.ArrowInvalid as e:
        first = str(e).splitlines()[0] if str(e) else "unreadable"
        raise DataError(f"{path}: not a valid CSV file ({first}); write a header line and one row per line") from None


def read_file(path: str | os.PathLike) -> list[dict]:
    """Rows of one local .jsonl / .json / .parquet / .csv file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return _read_jsonl(path)
    if path.suffix == ".json":
        return _read_json(path)
    if path.suffix == ".parquet":
        return _read_parquet(path)
    if path.suffix == ".csv":
        return _read_csv(path)
    raise DataError(f"{path}: unsupported file type '{path.suffix}'; use .jsonl, .json, .parquet or .csv")


def _split_files(folder: Path, split: str) -> list[Path]:
    """Files of ``split`` in a folder: ``split.jsonl``, ``split.csv``, ``split-*.parquet``, ``data/split-*``..."""
    found: list[Path] = []
    for base in (folder, folder / "data"):
        if not base.is_dir():
            continue
        for p in sorted(base.iterdir()):
            if p.suffix in _SUFFIXES and (p.stem == split or p.stem.startswith(f"{split}-") or p.stem.startswith(f"{split}_")):
                found.append(p)
        if found:
            break
    return found


def write_jsonl(rows: list[dict], path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def has_split(source: str, split: str, config: str | None = None) -> bool:
    """Whether ``source`` has its own ``split``: a single file has none, a folder has files named
    after it, a hub dataset lists it (Countdown-Tasks-3to4 has only ``train``)."""
    p = Path(os.path.expanduser(source))
    if p.is_file():
        return False
    if p.is_dir():
        return bool(_split_files(p, split))
    try:
        import datasets

        return split in datasets.get_dataset_split_names(source, config)
    except Exception:
        return False


def load_rows(source: str, split: str = "train", config: str | None = None) -> list[dict]:
    """Rows of ``split`` from ``source``.

    ``source`` is a file (its rows, whatever the split), a folder (files named after the split), or
    a hub id (``datasets.load_dataset(source, config, split=split)``).
    """
    p = Path(os.path.expanduser(source))
    if p.is_file():
        return read_file(p)
    if p.is_dir():
        files = _split_files(p, split)
        if not files:
            raise DataError(
                f"{source}: no file for split '{split}' (looked for {split}.jsonl, {split}.parquet, {split}.csv, "
                f"{split}-*.parquet); name the file after the split or pass the file itself"
            )
        rows: list[dict] = []
        for f in files:
            rows.extend(read_file(f))
        return rows
    if source.startswith((".", "/", "~")) or source.endswith(_SUFFIXES):
        raise DataError(f"{source}: no such file or folder; check the path")
    return _load_hub(source, split, config)


def _load_hub(hub_id: str, split: str, config: str | None) -> list[dict]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError(f"{hub_id}: loading from the hub needs `pip install datasets`") from None
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:  # network, missing split, missing config...
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"{hub_id}: could not load split '{split}' from the hub ({msg}); "
            "check the id and your connection, or pass a local .jsonl/.parquet/.csv file"
        ) from None
    return [dict(r) for r in ds]


def as_int_list(value: Any) -> list[int]:
    """Numbers stored as a list, a numpy array or a JSON string, as a list of int."""
    if isinstance(value, str):
        value = json.loads(value)
    return [int(v) for v in list(value)]
