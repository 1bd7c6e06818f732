"""r1zero.models.fold_head_input: a frozen model's prefill with ``logits_to_keep`` computes its
last-position logits without copying the LM head's weight once per row (torch's matmul does that
for a strided rows x 1 x hidden slice and a weight that needs no gradient), and the logits are the
head applied to the last hidden state."""
import torch
from torch.profiler import ProfilerActivity, profile

from r1zero.models import load_model
from r1zero.rollout.layout import left_pad, position_ids_from_mask

PROMPTS = [[5, 17, 300, 42, 8, 9], [9, 1000], [77, 78, 79, 80, 81, 82, 83], [4, 4, 4], [6] * 9, [7, 8]]


def _largest_allocation(fn) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.cpu_memory_usage for e in prof.events())


def test_frozen_prefill_does_not_copy_the_head_per_row(tiny_llama):
    # In bf16, as the sampling copy: torch's CPU batched product copies the expanded weight then.
    model = load_model(str(tiny_llama), torch.device("cpu"), trainable=False).to(torch.bfloat16)
    ids, mask = left_pad(PROMPTS, 0)
    pos = position_ids_from_mask(mask)
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        call = lambda: model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1)  # noqa: E731
        largest = _largest_allocation(call)
        logits = call().logits[:, -1]
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
    # A copy of the head per row would be len(PROMPTS) times the weight; nothing needs half of that.
    assert largest < len(PROMPTS) * head.numel() * head.element_size() / 2
    torch.testing.assert_close(logits, torch.nn.functional.linear(hidden, head))
