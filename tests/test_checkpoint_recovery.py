"""What a kill can leave in a run folder, laid out by hand as r1zero.training.checkpoint leaves it, and what
the listing (which resume uses) and the next save make of it. The real kills are in
tests/test_crash_resume.py; this file covers each layout, also those a kill hits only by chance."""
import json

from r1zero.training.checkpoint import list_checkpoints, prune_checkpoints, save_checkpoint


def folder(path, step, complete=True, mark=""):
    """A checkpoint folder of ``step``; complete ones have their state file (written last)."""
    path.mkdir()
    (path / "model.safetensors").write_text(mark)
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    return path


def test_a_kill_between_the_renames_of_a_resave_leaves_a_checkpoint_that_is_listed(tmp_path):
    folder(tmp_path / "checkpoint-2", 2)
    folder(tmp_path / ".old-checkpoint-3-4242", 3, mark="old")  # moved away by the re-save
    folder(tmp_path / ".tmp-checkpoint-3-k2j1", 3, mark="new")  # complete, not yet renamed
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert (tmp_path / "checkpoint-3" / "model.safetensors").read_text() == "new"  # the newer save
    prune_checkpoints(tmp_path, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]


def test_only_the_old_folder_left_is_put_back(tmp_path):
    folder(tmp_path / ".old-checkpoint-5-1", 5, mark="old")
    folder(tmp_path / ".tmp-checkpoint-5-x", 5, complete=False)  # killed before its state file
    assert [s for s, _ in list_checkpoints(tmp_path)] == [5]
    assert (tmp_path / "checkpoint-5" / "model.safetensors").read_text() == "old"


def test_an_incomplete_write_is_never_listed_and_is_removed(tmp_path):
    folder(tmp_path / "checkpoint-1", 1)
    folder(tmp_path / ".tmp-checkpoint-2-a", 2, complete=False)
    folder(tmp_path / ".del-checkpoint-0-7", 0)  # a prune killed during its rmtree
    assert [s for s, _ in list_checkpoints(tmp_path)] == [1]
    prune_checkpoints(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]


def test_an_existing_checkpoint_wins_over_a_complete_unrenamed_save(tmp_path):
    """Killed after the new save's state file but before the first rename: the save did not happen."""
    folder(tmp_path / "checkpoint-4", 4, mark="old")
    folder(tmp_path / ".tmp-checkpoint-4-z", 4, mark="new")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
    assert (tmp_path / "checkpoint-4" / "model.safetensors").read_text() == "old"


def test_every_save_removes_leftovers_also_without_a_limit(tiny_qwen2, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    folder(tmp_path / ".tmp-checkpoint-1-a", 1, complete=False)
    folder(tmp_path / ".del-checkpoint-0-7", 0)
    save_checkpoint(tmp_path, 1, model, None, {"step": 1}, total_limit=None)
    save_checkpoint(tmp_path, 1, model, None, {"step": 1}, total_limit=None)  # the same step again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1"]
    save_checkpoint(tmp_path, 2, model, None, {"step": 2}, total_limit=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2"]
