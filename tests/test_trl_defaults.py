"""docs/CONFIG.md's "Defaults that differ from TRL's GRPOConfig" against TRL 1.16's own dataclass."""
import dataclasses

from trl import GRPOConfig

from r1zero.config import config_reference, defaults
from r1zero.trl_defaults import DIFFERENT_DEFAULTS


def trl_defaults() -> dict:
    out = {}
    for f in dataclasses.fields(GRPOConfig):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def test_the_table_lists_exactly_the_keys_whose_defaults_differ():
    ours, trl = defaults(), trl_defaults()
    shared = set(ours) & set(trl)
    assert len(shared) > 30  # the comparison is real
    differ = {k for k in shared if ours[k] != trl[k]}
    # bf16: both dataclasses say None, but TRL resolves it to `not fp16` (below) and r1zero by device.
    assert set(DIFFERENT_DEFAULTS) == differ | {"bf16"}
    for key, (value, _) in DIFFERENT_DEFAULTS.items():
        if key != "bf16":
            assert value == trl[key], key
    # TRL's bf16 default resolves to on (here with use_cpu, which lets TRL build the config on a CPU).
    assert GRPOConfig(output_dir="unused", use_cpu=True).bf16 is True


def test_the_section_is_in_the_reference():
    ref = config_reference()
    assert "## Defaults that differ from TRL's GRPOConfig" in ref
    assert "| `loss_type` | `'grpo'` | `'dapo'` |" in ref and "| `gradient_checkpointing` | `False` | `True` |" in ref
