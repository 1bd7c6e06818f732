"""r1zero: R1-Zero style reinforcement learning from verifiable rewards for small language models.

The pipeline, one subpackage per stage, imports only going down it: config -> data -> tasks
(prompt, reward scheme) -> models / rollout (sampling) -> rewards (scoring) -> algorithms (advantage,
loss) -> observe (metrics, evaluation, report) -> training (the loop: update, checkpoint) -> cli. ``GRPOConfig`` and ``GRPOTrainer``
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
