"""r1zero: R1-Zero style reinforcement learning from verifiable rewards for small language models.

The pipeline, one module each: data -> tasks (prompt, reward) -> rollout -> rewards -> grpo
(advantage, loss) -> trainer (update) -> tracking / checkpoint. ``GRPOConfig`` and ``GRPOTrainer``
(r1zero.trl) take a TRL script as it is: change ``from trl import`` to ``from r1zero import``.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    # Imported on first use: `import r1zero` (the CLI, a reward worker) stays light.
    if name in ("GRPOConfig", "GRPOTrainer"):
        from r1zero import trl

        return getattr(trl, name)
    raise AttributeError(f"module 'r1zero' has no attribute {name!r}")


__all__ = ["GRPOConfig", "GRPOTrainer", "__version__"]
