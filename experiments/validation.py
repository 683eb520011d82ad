"""Config checks that run before anything is loaded, compiled or written."""

from __future__ import annotations

import ml_collections

from eqnn import ops
from experiments import tasks


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def validate_config(c: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` naming the first field that cannot work."""
  def need(ok, field, msg):
    if not ok:
      raise ConfigError(f"config.{field} = {c.get(field)!r}: {msg}")
  need(c.group in tasks.GROUP_ACTIONS, "group", f"choose one of {sorted(tasks.GROUP_ACTIONS)}")
  need(c.model in tasks.MODELS, "model", f"choose one of {tasks.MODELS}")
  need(c.architecture in tasks.ARCHITECTURES, "architecture",
       f"choose one of {tasks.ARCHITECTURES}")
  need(len(c.pools) == len(c.conv_features), "pools",
       f"need one pool window per conv ({len(c.conv_features)})")
  need(len(c.conv_features) >= 1, "conv_features", "need at least one conv")
  need(c.impl in ops.IMPLS, "impl", f"choose one of {ops.IMPLS}")
  for f in ("batch_size", "num_epochs", "eval_batch_size", "log_every_steps"):
    need(int(c[f]) > 0, f, "must be positive")
  need(c.learning_rate > 0, "learning_rate", "must be positive")
  need(c.schedule in ("cosine", "constant"), "schedule", "choose 'cosine' or 'constant'")
  need(c.microbatches >= 1 and c.batch_size % c.microbatches == 0, "microbatches",
       f"must be >= 1 and divide config.batch_size = {c.batch_size}")
