"""Plug-ins that carry entrolab's RL losses and advantage estimators into other trainers.

* :mod:`entrolab.rl.integrations.trl` — ``EntrolabGRPOTrainer``, a ``trl.GRPOTrainer`` subclass
  whose advantages and per-token policy loss come from ``entrolab.rl.advantage_estimators`` and
  ``entrolab.rl.policy_losses`` and which logs the entropy-dynamics metrics (needs ``trl``).
* :mod:`entrolab.rl.integrations.verl` — ``register()`` puts entrolab's losses (and optionally
  its advantage estimators) into verl's registries under ``entrolab_*`` names (needs ``verl``).

Nothing is imported here: each plug-in imports its framework only when you import it, so
``import entrolab.rl.integrations`` works without TRL or verl installed. See
docs/rl_integrations.md.
"""

from __future__ import annotations

__all__: list[str] = []
