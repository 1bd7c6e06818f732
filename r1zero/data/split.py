"""Which rows train and which test (the ``dataset_*`` / ``*_size`` / ``data_*`` keys), and the seeded,
resumable order in which training draws them: every epoch is a fresh permutation keyed by
(seed, epoch), and the position in it is part of every checkpoint.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from r1zero.data.files import DataError, has_split


def load_data(task, cfg, given: tuple[list[dict], list[dict]] | None = None) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows) of ``task`` (an r1zero.tasks.Task) as the config's split rules say, or
    the rows ``given`` in memory (r1zero.trl: TRL's train_dataset and eval_dataset, as they are),
    checked as loaded rows are."""
    if given is not None:
        if not given[0]:
            raise DataError("train_dataset: no rows; give a dataset with at least one row")
        return task.check_rows(list(given[0]), "train_dataset"), task.check_rows(list(given[1]), "eval_dataset")
    src = cfg.dataset_name
    rows = task.load_split(cfg.dataset_train_split, source=src, config=cfg.dataset_config)
    if not rows:  # said now: the test-split arithmetic below would blame test_size
        raise DataError(f"dataset_name: {src or 'the generated data'} has no rows for split "
                        f"'{cfg.dataset_train_split}'; give a file with rows or check dataset_train_split")
    test: list[dict] | None = None
    if src is None or has_split(src, cfg.dataset_test_split, cfg.dataset_config):
        try:
            test = task.load_split(cfg.dataset_test_split, source=src, config=cfg.dataset_config)
        except DataError:
            test = None  # e.g. a hub dataset with only a train split: cut test rows from it below
    if cfg.data_shuffle_seed is not None:
        rows = rows[:]
        random.Random(cfg.data_shuffle_seed).shuffle(rows)
    if cfg.data_max_rows is not None:
        rows = rows[:cfg.data_max_rows]
    if test is None:
        n_test = 1024 if cfg.test_size is None else _count(cfg.test_size, len(rows))
        n_train = cfg.train_size or len(rows) - n_test
        if n_train < 1:
            raise DataError(f"dataset_name: {len(rows)} rows leave no train rows after {n_test} test rows; lower test_size")
        test = rows[n_train:n_train + n_test]
        rows = rows[:n_train]
    else:
        if cfg.train_size is not None:
            rows = rows[:cfg.train_size]
        if cfg.test_size is not None:
            test = test[:_count(cfg.test_size, len(test))]
    if not rows:
        raise DataError(f"dataset_name: no train rows in {src or 'the generated data'}; check the file and dataset_train_split")
    return rows, test


def _count(size: float, n: int) -> int:
    """A row count from ``test_size``: a fraction (< 1) of ``n`` rows, or a number of rows."""
    return int(n * size) if size < 1 else int(size)


@dataclass
class DataPosition:
    epoch: int = 0
    offset: int = 0


def draw_batch(n_rows: int, pos: DataPosition, k: int, seed: int) -> tuple[list[int], DataPosition]:
    """Indices of the next ``k`` rows; each epoch is a fresh permutation keyed by (seed, epoch)."""
    out: list[int] = []
    epoch, offset = pos.epoch, pos.offset
    while len(out) < k:
        perm = list(range(n_rows))
        random.Random(seed * 100_003 + epoch).shuffle(perm)
        take = min(k - len(out), n_rows - offset)
        out.extend(perm[offset:offset + take])
        offset += take
        if offset >= n_rows:
            epoch, offset = epoch + 1, 0
    return out, DataPosition(epoch, offset)
