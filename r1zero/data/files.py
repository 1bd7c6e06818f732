"""Loading rows of a dataset from a local file, a local folder, or the Hugging Face hub.

Every loader returns a plain ``list[dict]`` (one dict per row, the dataset's own fields), so tasks,
tests and users handle one shape. Local files are read without the ``datasets`` library where we can
(jsonl/json), so the common offline path has no tensor_state dependency; parquet and csv go through
``pyarrow`` (csv columns get the types it infers, as ``datasets`` gives them), hub ids through ``datasets``.

GSM8K (MIT, r1zero/data/gsm8k/: gzipped JSON lines and its license) ships with the package: the hub id
``openai/gsm8k`` (config ``main``, the one its tasks use) is read from that copy, so ``task: gsm8k``
and ``task: math`` over GSM8K work offline and give the same rows everywhere.

Rows and lines are counted from 1 in every message, as editors count lines.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data source that cannot be read; the message is one line naming the source and the fix."""


_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")

# Hub datasets read from the copy shipped in this package: (hub id, config) -> folder of split files.
SHIPPED = {("openai/gsm8k", None): Path(__file__).resolve().parent / "gsm8k",
           ("openai/gsm8k", "main"): Path(__file__).resolve().parent / "gsm8k"}


def shipped_folder(source: str | None, config: str | None = None) -> Path | None:
    """The folder of the shipped copy of hub dataset ``source`` (with ``config``), or None."""
    return SHIPPED.get((source, config)) if isinstance(source, str) else None


def _file_type(path: Path) -> str:
    """``.jsonl`` for both ``x.jsonl`` and ``x.jsonl.gz`` (JSON read through gzip), else the suffix."""
    if path.suffix == ".gz" and Path(path.stem).suffix in (".jsonl", ".json"):
        return Path(path.stem).suffix
    return path.suffix


def _open_bytes(path: Path):
    return gzip.open(path) if path.suffix == ".gz" else open(path, "rb")


def _decode(data: bytes, path: Path, first_line: int = 1) -> str:
    """``data`` as UTF-8 text, or a DataError naming the line with the bad byte. A byte order mark at the
    start of the file (Windows editors write one) is dropped, not read as part of the first row."""
    try:
        return data.decode("utf-8-sig" if first_line == 1 else "utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        raise DataError(f"{path}:{line}: byte 0x{data[e.start]:02x} is not UTF-8 text; save the file "
                        "as UTF-8 (or fix that line)") from None


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with _open_bytes(path) as f:  # bytes, decoded line by line, so a bad byte is named with its line
        for lineno, raw in enumerate(f, 1):
            line = _decode(raw, path, lineno).strip()
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
    with _open_bytes(path) as f:
        text = _decode(f.read(), path)
    try:
        data = json.loads(text)
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
    """Rows of one local .jsonl / .json (either may be gzipped: .jsonl.gz) / .parquet / .csv file."""
    path = Path(path)
    if _file_type(path) == ".jsonl":
        return _read_jsonl(path)
    if _file_type(path) == ".json":
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
            stem = p.name[:-len(_file_type(p) + (".gz" if p.suffix == ".gz" else ""))]
            if _file_type(p) in _SUFFIXES and (stem == split or stem.startswith((f"{split}-", f"{split}_"))):
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
    if shipped_folder(source, config) is not None:
        return bool(_split_files(shipped_folder(source, config), split))
    try:
        import datasets

        return split in datasets.get_dataset_split_names(source, config)
    except Exception:
        return False


def load_rows(source: str, split: str = "train", config: str | None = None) -> list[dict]:
    """Rows of ``split`` from ``source``.

    ``source`` is a file (its rows, whatever the split), a folder (files named after the split), or
    a hub id (``datasets.load_dataset(source, config, split=split)``; a shipped one from its copy).
    """
    p = Path(os.path.expanduser(source))
    if p.is_file():
        return read_file(p)
    if not p.is_dir() and shipped_folder(source, config) is not None:
        p = shipped_folder(source, config)
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
