"""Advantage estimators and policy losses, one module per algorithm, behind a registry.

``get_algorithm(name)`` gives the class the config's ``algorithm:`` names (grpo, ppo, rloo,
reinforce_pp); r1zero.algorithms.base says what an algorithm is to the update loop. The pure
functions users call directly are re-exported here.
"""
from r1zero.algorithms.base import (Algorithm, RolloutBatch, UpdateContext, algorithm_names, configured_algorithm,
                                   get_algorithm)
from r1zero.algorithms.grpo import group_advantages, group_stats
from r1zero.algorithms.losses import kl_divergence, policy_loss
from r1zero.algorithms import ppo as _ppo, reinforce_pp as _reinforce_pp, rloo as _rloo  # noqa: F401  (register)

__all__ = ["Algorithm", "RolloutBatch", "UpdateContext", "algorithm_names", "configured_algorithm", "get_algorithm",
           "group_advantages", "group_stats", "kl_divergence", "policy_loss"]
