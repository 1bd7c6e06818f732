"""Per-token log-probabilities of completion tokens, computed in chunks.

Full-vocabulary logits for a whole batch (batch x length x vocab: 151,936 columns for Qwen) are the
largest tensor of an RL step. We run the transformer body once, keep only the hidden states of the
positions that predict completion tokens, and push those through the LM head a chunk at a time. With
gradients on, each chunk is checkpointed: its logits are recomputed in the backward pass instead of
being kept, so peak memory holds one chunk of logits, not all of them.

Logits are divided by the sampling temperature before the softmax (a known trap: the samples came
from the tempered distribution, so their log-probs must too).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _chunk_logprobs(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None, temperature: float, softcap: float | None):
    logits = F.linear(hidden, weight, bias).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz
    with torch.no_grad():
        probs = torch.softmax(logits, dim=-1)
        entropy = logz - (probs * logits).sum(-1)
    return logp, entropy


def completion_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int,
                        completion_mask: torch.Tensor, *, temperature: float = 1.0,
                        chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs (B, C) and entropies (B, C) of the completion tokens.

    ``input_ids`` is ``[left-padded prompt (width P) | completion (width C)]``; ``attention_mask``
    covers both; ``completion_mask`` (B, C) marks the tokens that count (up to and including EOS).
    Masked-out positions get 0. Gradients flow when grad mode is on.
    """
    B, L = input_ids.shape
    C = L - prompt_width
    position_ids = position_ids_from_mask(attention_mask)
    head = model.get_output_embeddings()
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    softcap = getattr(model.config, "final_logit_softcapping", None)
    sel = completion_mask.bool()
    targets = input_ids[:, prompt_width:][sel]  # (N,)

    if decoder is not None and decoder is not model and isinstance(head, torch.nn.Linear):
        # Only the states that predict completion tokens: positions P-1 .. L-2.
        hidden = decoder(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                         position_ids=position_ids[:, :-1], use_cache=False).last_hidden_state
        hidden = hidden[:, prompt_width - 1:][sel]  # (N, H)
        weight, bias = head.weight, head.bias
        pieces_lp, pieces_ent = [], []
        for start in range(0, hidden.shape[0], chunk_size):
            h = hidden[start:start + chunk_size]
            t = targets[start:start + chunk_size]
            if torch.is_grad_enabled():
                lp, ent = checkpoint(_chunk_logprobs, h, t, weight, bias, temperature, softcap, use_reentrant=False)
            else:
                lp, ent = _chunk_logprobs(h, t, weight, bias, temperature, softcap)
            pieces_lp.append(lp)
            pieces_ent.append(ent)
        flat_lp = torch.cat(pieces_lp) if pieces_lp else hidden.new_zeros(0, dtype=torch.float32)
        flat_ent = torch.cat(pieces_ent) if pieces_ent else hidden.new_zeros(0, dtype=torch.float32)
    else:
        # Models without a separable head: full logits for this micro-batch only.
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).logits[:, prompt_width - 1:-1].float() / temperature
        logz = torch.logsumexp(logits, dim=-1)
        lp_all = logits.gather(-1, input_ids[:, prompt_width:].unsqueeze(-1)).squeeze(-1) - logz
        with torch.no_grad():
            ent_all = logz - (torch.softmax(logits, -1) * logits).sum(-1)
        flat_lp, flat_ent = lp_all[sel], ent_all[sel]

    logprobs = torch.zeros(B, C, dtype=torch.float32, device=input_ids.device)
    entropy = torch.zeros(B, C, dtype=torch.float32, device=input_ids.device)
    logprobs = logprobs.masked_scatter(sel, flat_lp)
    entropy = entropy.masked_scatter(sel, flat_ent.detach())
    return logprobs, entropy
