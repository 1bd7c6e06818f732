"""A model loaded to be trained on a CPU holds its weights in the process's own memory, not in the
private mapping of the safetensors file transformers loads from (r1zero.models.own_memory): there
the first optimizer step would copy every 4 KB page on its first write, and the weights would stay
in 4 KB pages. A model that is only read stays mapped (no second copy)."""
from pathlib import Path

import pytest
import torch

from r1zero.models import load_model

MAPS = Path("/proc/self/maps")


def _file_mappings(path: Path) -> list[tuple[int, int]]:
    spans = []
    for line in MAPS.read_text().splitlines():
        if line.endswith(str(path)):
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            spans.append((lo, hi))
    return spans


def _in_mapping(model, spans) -> int:
    return sum(any(lo <= p.data_ptr() < hi for lo, hi in spans) for p in model.parameters())


@pytest.mark.skipif(not MAPS.exists(), reason="reads the process's mappings from /proc (Linux)")
def test_trained_weights_leave_the_file_mapping(tiny_qwen2):
    weights = Path(tiny_qwen2) / "model.safetensors"
    assert weights.exists()
    read_only = load_model(str(tiny_qwen2), torch.device("cpu"), trainable=False)
    trained = load_model(str(tiny_qwen2), torch.device("cpu"))
    spans = _file_mappings(weights.resolve())
    if spans:  # this transformers maps the file: the read-only model's weights are in it
        assert _in_mapping(read_only, spans) == len(list(read_only.parameters()))
    assert _in_mapping(trained, spans) == 0
    for a, b in zip(read_only.state_dict().values(), trained.state_dict().values()):
        assert torch.equal(a, b)
    if trained.config.tie_word_embeddings:
        assert trained.lm_head.weight is trained.get_input_embeddings().weight


@pytest.mark.skipif(not MAPS.exists(), reason="reads the process's mappings from /proc (Linux)")
def test_a_critic_holds_its_weights_in_own_aligned_memory(tiny_qwen2, tmp_path):
    """PPO's critic is trained like the policy, and its weights start on 64-byte boundaries whichever
    file it came from: a critic read from a checkpoint then computes what the saved one computed."""
    from r1zero.algorithms.ppo import load_critic

    first = load_critic(str(tiny_qwen2), torch.device("cpu"))
    first.save_pretrained(tmp_path / "critic")
    again = load_critic(str(tmp_path / "critic"), torch.device("cpu"))
    for critic, folder in ((first, Path(tiny_qwen2)), (again, tmp_path / "critic")):
        assert _in_mapping(critic, _file_mappings((folder / "model.safetensors").resolve())) == 0
        assert [p.data_ptr() % 64 for p in critic.parameters()] == [0] * len(list(critic.parameters()))
    x = torch.randint(0, first.config.vocab_size, (2, 37))
    with torch.no_grad():
        assert torch.equal(first(input_ids=x).logits, again(input_ids=x).logits)
