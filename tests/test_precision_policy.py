"""bf16: auto resolves by device: a CUDA GPU with bf16, or a CPU with native bf16 (AVX512-BF16/AMX)."""
from __future__ import annotations

import pytest
import torch

from r1zero.config import ConfigError, TrainConfig
from r1zero.models import autocast_dtype, cpu_has_native_bf16, use_bf16

CPU = torch.device("cpu")


def test_cpu_detection_follows_torch_probes_unless_forced(monkeypatch):
    monkeypatch.delenv("R1ZERO_CPU_BF16", raising=False)
    native = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert cpu_has_native_bf16() is native
    monkeypatch.setenv("R1ZERO_CPU_BF16", "1")
    assert cpu_has_native_bf16() is True
    monkeypatch.setenv("R1ZERO_CPU_BF16", "0")
    assert cpu_has_native_bf16() is False


@pytest.mark.parametrize("setting", [None, "auto"])
@pytest.mark.parametrize("native", ["0", "1"])
def test_auto_is_on_exactly_for_a_cpu_with_native_bf16(monkeypatch, setting, native):
    monkeypatch.setenv("R1ZERO_CPU_BF16", native)
    assert use_bf16(setting, CPU) is (native == "1")
    assert autocast_dtype(setting, CPU) == (torch.bfloat16 if native == "1" else None)


@pytest.mark.parametrize("native", ["0", "1"])
def test_true_and_false_force_it(monkeypatch, native):
    monkeypatch.setenv("R1ZERO_CPU_BF16", native)
    assert use_bf16(True, CPU) is True and autocast_dtype(True, CPU) == torch.bfloat16
    assert use_bf16(False, CPU) is False and autocast_dtype(False, CPU) is None


def test_config_takes_auto_and_refuses_other_words():
    assert TrainConfig(bf16="auto").bf16 == "auto"
    assert TrainConfig().bf16 is None
    with pytest.raises(ConfigError, match="'bf16' must be bool or 'auto' or null"):
        TrainConfig(bf16="sometimes")
