"""The data the trainer sees: draw_batch's order across epochs, load_data's options, and the
`r1zero data countdown` command."""
import gzip
import json
import random
import subprocess
import sys

import pytest

from conftest import REPO
from r1zero.config import TrainConfig
from r1zero.data.files import DataError, has_split, load_rows, read_file
from r1zero.tasks import get_task
from r1zero.tasks.arithmetic import evaluate, uses_exactly
from r1zero.tasks.countdown import generate_tasks, solve
from r1zero.data.split import DataPosition, draw_batch, load_data
from r1zero.tasks import build_task


def test_draw_batch_is_a_fresh_permutation_each_epoch_and_continues_exactly():
    n, k, seed = 10, 4, 7
    pos, drawn = DataPosition(), []
    for _ in range(10):  # 40 rows: 4 epochs of 10
        idx, pos = draw_batch(n, pos, k, seed)
        assert len(idx) == k
        drawn += idx
    assert pos == DataPosition(epoch=4, offset=0)
    epochs = [drawn[e * n:(e + 1) * n] for e in range(4)]
    for e in epochs:
        assert sorted(e) == list(range(n))  # each epoch holds every row once
    assert len({tuple(e) for e in epochs}) == 4  # and in its own order
    # The order is the documented one: epoch e is random.Random(seed * 100_003 + e).shuffle of 0..n-1.
    for i, e in enumerate(epochs):
        perm = list(range(n))
        random.Random(seed * 100_003 + i).shuffle(perm)
        assert e == perm
    # A batch that crosses an epoch boundary takes the rest of one epoch and the start of the next.
    assert drawn[8:12] == epochs[0][8:] + epochs[1][:2]
    # Resuming from any saved position continues exactly where the uninterrupted draw was.
    for stop in range(1, 10):
        pos = DataPosition()
        for _ in range(stop):
            _, pos = draw_batch(n, pos, k, seed)
        rest = []
        for _ in range(10 - stop):
            idx, pos = draw_batch(n, DataPosition(**vars(pos)), k, seed)
            rest += idx
        assert rest == drawn[stop * k:]
    # k larger than the data: several epochs in one batch, still each a permutation.
    idx, pos = draw_batch(3, DataPosition(), 7, seed)
    assert sorted(idx[:3]) == sorted(idx[3:6]) == [0, 1, 2] and pos == DataPosition(2, 1)
    assert draw_batch(n, DataPosition(), k, seed + 1)[0] != epochs[0][:k]  # the seed matters


def _rows_file(tmp_path, n):
    """A Countdown data file with only a train split (a single file), n rows told apart by target."""
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"nums": [1, 2], "target": 100 + i}) + "\n" for i in range(n)))
    return path


def _targets(rows):
    return [r["target"] - 100 for r in rows]


def _cfg(tmp_path, **kw):
    return TrainConfig(**{"output_dir": str(tmp_path / "out"), "task": "countdown", **kw})


def test_load_data_cuts_shuffles_and_limits_as_configured(tmp_path):
    src = str(_rows_file(tmp_path, 50))
    task = build_task(_cfg(tmp_path))
    # No test split in a single file: test rows are cut after the train rows; a fraction is of all rows.
    train, test = load_data(task, _cfg(tmp_path, dataset_name=src, test_size=0.1))
    assert _targets(train) == list(range(45)) and _targets(test) == list(range(45, 50))
    train, test = load_data(task, _cfg(tmp_path, dataset_name=src, test_size=0.25))
    assert len(train) == 38 and _targets(test) == list(range(38, 50))  # int(50 * 0.25) = 12
    train, test = load_data(task, _cfg(tmp_path, dataset_name=src, test_size=7))
    assert _targets(test) == list(range(43, 50))
    train, test = load_data(task, _cfg(tmp_path, dataset_name=src, test_size=0.1, train_size=20))
    assert _targets(train) == list(range(20)) and _targets(test) == list(range(20, 25))

    # data_shuffle_seed shuffles all rows with random.Random(seed) before the cut (Datawhale: 2025).
    order = list(range(50))
    random.Random(2025).shuffle(order)
    train, test = load_data(task, _cfg(tmp_path, dataset_name=src, test_size=0.1, data_shuffle_seed=2025))
    assert _targets(train) == order[:45] and _targets(test) == order[45:]
    # data_max_rows keeps the first rows after the shuffle; the fraction is of what is kept.
    train, test = load_data(task, _cfg(tmp_path, dataset_name=src, test_size=0.1, data_shuffle_seed=2025,
                                       data_max_rows=30))
    assert _targets(train) == order[:27] and _targets(test) == order[27:30]
    train, test = load_data(task, _cfg(tmp_path, dataset_name=src, test_size=0.1, data_max_rows=30))
    assert _targets(train) == list(range(27)) and _targets(test) == list(range(27, 30))

    with pytest.raises(DataError, match="leave no train rows .* lower test_size"):
        load_data(task, _cfg(tmp_path, dataset_name=src, test_size=50))


def test_load_data_keeps_a_real_test_split_and_cuts_it_by_test_size(tmp_path):
    """Generated Countdown has its own test split: test_size (a fraction: of the test rows) cuts it,
    train_size cuts the train rows; data_shuffle_seed shuffles the train rows only."""
    cfg = dict(task_args={"train_size": 40, "test_size": 20})
    task = build_task(_cfg(tmp_path, **cfg))
    full_train, full_test = task.load_split("train"), task.load_split("test")
    train, test = load_data(task, _cfg(tmp_path, test_size=0.25, train_size=10, **cfg))
    assert train == full_train[:10] and test == full_test[:5]
    order = list(range(40))
    random.Random(3).shuffle(order)
    train, test = load_data(task, _cfg(tmp_path, data_shuffle_seed=3, data_max_rows=12, **cfg))
    assert train == [full_train[i] for i in order[:12]] and test == full_test


def test_data_countdown_command_writes_solvable_rows_the_trainer_reads(tmp_path):
    out = tmp_path / "cd.jsonl"
    r = subprocess.run([sys.executable, "-m", "r1zero", "data", "countdown", "--n", "12", "--seed", "5",
                        "--out", str(out), "--min-numbers", "3", "--max-numbers", "3", "--max-number", "20"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"wrote 12 countdown tasks to {out}" in r.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12
    for row in rows:
        nums, target = row["nums"], row["target"]
        assert len(nums) == 3 and all(1 <= x <= 20 for x in nums)
        # "each proven solvable": the exhaustive solver finds an expression using every number once.
        sol = solve(nums, target)
        assert sol is not None and uses_exactly(sol, nums) and evaluate(sol) == target, row
    # The command's options reach the generator: the rows are the seeded generator's for those options.
    assert rows == generate_tasks(12, 5, min_numbers=3, max_numbers=3, max_number=20)
    assert rows != generate_tasks(12, 6, min_numbers=3, max_numbers=3, max_number=20)
    # Read back as a training source (a single file: test rows cut from it).
    task = get_task("countdown")
    train, test = load_data(task, TrainConfig(output_dir=str(tmp_path / "o"), dataset_name=str(out), test_size=2))
    assert [r["target"] for r in train + test] == [r["target"] for r in rows] and len(test) == 2


def test_a_utf8_bom_is_not_part_of_the_first_row(tmp_path):
    """Windows editors start UTF-8 files with a BOM: the first row reads as the others do."""
    row = {"nums": [44, 19, 35], "target": 98}
    jsonl, js = tmp_path / "bom.jsonl", tmp_path / "bom.json"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps(row) + "\r\n").encode() * 2)
    js.write_bytes(b"\xef\xbb\xbf" + json.dumps([row, row]).encode())
    assert read_file(jsonl) == [row, row] and read_file(js) == [row, row]
    # Only at the very start: a BOM inside line 2 is a character of that line (here: not JSON).
    jsonl.write_bytes((json.dumps(row) + "\n").encode() + b"\xef\xbb\xbf" + json.dumps(row).encode())
    with pytest.raises(DataError, match=r"bom.jsonl:2: not valid JSON"):
        read_file(jsonl)


def test_gzipped_json_lines_read_like_plain_ones_and_name_the_line(tmp_path):
    rows = [{"nums": [1, 2], "target": 3}, {"nums": [4, 5], "target": 9, "who": "Jos\u00e9"}]
    with gzip.open(tmp_path / "train.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert read_file(tmp_path / "train.jsonl.gz") == rows
    assert load_rows(str(tmp_path), "train") == rows and has_split(str(tmp_path), "train")
    assert not has_split(str(tmp_path), "test")
    with gzip.open(tmp_path / "bad.jsonl.gz", "wb") as f:
        f.write(b'{"a": 1}\n\n{"a": "\xe9"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl.gz:3: byte 0xe9 is not UTF-8"):
        read_file(tmp_path / "bad.jsonl.gz")


def test_gsm8k_ships_with_the_package_and_keeps_its_own_test_split(tmp_path, monkeypatch):
    """openai/gsm8k (config main, or none as task math passes) is read from r1zero/data/gsm8k, never the
    hub: load_data takes GSM8K's own 1319 test rows instead of cutting test rows from train."""
    import datasets

    def offline(*args, **kwargs):
        raise AssertionError("the hub was asked for a dataset that ships with r1zero")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    monkeypatch.setattr(datasets, "get_dataset_split_names", offline)
    shipped = REPO / "r1zero" / "data" / "gsm8k"
    assert sorted(p.name for p in shipped.iterdir()) == ["LICENSE", "test.jsonl.gz", "train.jsonl.gz"]
    assert "MIT License" in (shipped / "LICENSE").read_text() and "OpenAI" in (shipped / "LICENSE").read_text()
    assert has_split("openai/gsm8k", "test", "main") and has_split("openai/gsm8k", "test")
    test = load_rows("openai/gsm8k", "test", None)
    assert len(test) == 1319 and test == load_rows("openai/gsm8k", "test", "main")
    assert test[0]["answer"].endswith("#### 18")
    task = build_task(_cfg(tmp_path, task="gsm8k", dataset_name=None))
    train, test_rows = load_data(task, _cfg(tmp_path, task="gsm8k", dataset_name=None))
    assert len(train) == 7473 and test_rows == test
    math = build_task(_cfg(tmp_path, task="math", dataset_name="openai/gsm8k"))
    train, test_rows = load_data(math, _cfg(tmp_path, task="math", dataset_name="openai/gsm8k"))
    assert len(train) == 7473 and [r["answer"] for r in test_rows[:2]] == ["18", "3"]
    math.close()


@pytest.mark.parametrize("name", ["countdown", "gsm8k", "math", "custom"])
def test_rows_and_lines_are_counted_alike_from_1(name, tmp_path):
    """The third line of a JSON-lines file is "row 3" when its row is wrong and ":3:" when its text
    is, for every task (an editor's line number either way)."""
    from r1zero.tasks import TaskError, get_task

    good = {"countdown": {"nums": [1, 2], "target": 3}, "gsm8k": {"question": "q", "answer": "a #### 3"},
            "math": {"problem": "p", "answer": "3"}, "custom": {"prompt": "p"}}[name]
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n" + json.dumps({"other": 1}) + "\n")
    task = get_task(name)
    try:
        with pytest.raises(TaskError, match=r"d.jsonl( \(train\))? row 3\b"):
            task.load_split("train", str(path))
        path.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n" + "{not json\n")
        with pytest.raises(DataError, match=r"d.jsonl:3: not valid JSON"):
            task.load_split("train", str(path))
    finally:
        getattr(task, "close", lambda: None)()
