"""The reference model's placement (written once, r1zero.model_setup) and BatchScores.concat, the
one merge of score batches that gathering processes and dynamic sampling's rounds share."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from r1zero.model_setup import ReferencePlacement
from r1zero.rewards.scoring import BatchScores


def _cfg(ref_model_offload=False, fsdp_cpu_offload=False):
    return SimpleNamespace(ref_model_offload=ref_model_offload, fsdp_cpu_offload=fsdp_cpu_offload)


def test_reference_placement():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    # Not offloaded: on the run's device, never moved.
    assert ReferencePlacement.of(_cfg(), gpu, sharded=False) == ReferencePlacement(gpu, False, False)
    # Offloaded in one process (or DDP): loaded in CPU memory, moved in for each pass.
    assert ReferencePlacement.of(_cfg(ref_model_offload=True), gpu, sharded=False) == ReferencePlacement(cpu, True, True)
    # Offloaded and sharded: FSDP's CPU offload moves the shards; r1zero moves nothing.
    assert ReferencePlacement.of(_cfg(ref_model_offload=True), gpu, sharded=True) == ReferencePlacement(gpu, False, True)
    assert ReferencePlacement.of(_cfg(fsdp_cpu_offload=True), gpu, sharded=True) == ReferencePlacement(gpu, False, True)
    # On the CPU there is no FSDP offload to ask for.
    assert ReferencePlacement.of(_cfg(ref_model_offload=True), cpu, sharded=False) == ReferencePlacement(cpu, True, False)


def test_concat_takes_rows_in_order_and_counts_errors_once_asked():
    a = BatchScores([1.0, 2.0], [True, False], [True, True], {"x": [0.5, 0.25]}, {"f": 1}, {"f": "boom"})
    b = BatchScores([3.0], [False], [False], {"y": [7.0]}, {"f": 2, "g": 1}, {"f": "later", "g": "why"})
    merged = BatchScores.concat([a, b], [(1, 0), (0, 1), (0, 0)])
    assert merged.rewards == [3.0, 2.0, 1.0] and merged.correct == [False, False, True]
    assert merged.formatted == [False, True, True]
    assert merged.parts == {"x": [0.0, 0.25, 0.5], "y": [7.0, 0.0, 0.0]}  # a part a batch lacks counts 0
    assert list(merged.parts) == ["x", "y"] and merged.errors == {} and merged.error_reasons == {}
    merged.add_errors([a, b])
    assert merged.errors == {"f": 3, "g": 1} and merged.error_reasons == {"f": "boom", "g": "why"}
