"""r1zero: R1-Zero style reinforcement learning from verifiable rewards for small language models.

The pipeline, one module each: data -> tasks (prompt, reward) -> rollout -> rewards -> grpo
(advantage, loss) -> trainer (update) -> tracking / checkpoint.
"""
__version__ = "0.1.0"
