"""Config checks that run before anything is loaded, compiled or written."""

from __future__ import annotations

import math
import numbers

import ml_collections

from eqnn import actions, gcnn, image_actions, models, ops, spatial
from experiments import steps, tasks


class ConfigError(ValueError):
  """A config value that cannot work; the message names the field."""


def _ints(value) -> bool:
  return isinstance(value, (tuple, list)) and all(
      isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)


def validate_config(c: ml_collections.ConfigDict) -> None:
  """Raises :class:`ConfigError` naming the first field that cannot work."""
  def need(ok, field, msg):
    if not ok:
      raise ConfigError(f"config.{field} = {c.get(field)!r}: {msg}")

  def integer(field, low):
    v = c.get(field)
    need(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low, field,
         f"must be an integer >= {low}")

  def sizes(field, low=1, min_len=1):
    v = c.get(field)
    need(_ints(v) and len(v) >= min_len and all(x >= low for x in v), field,
         f"need {'at least ' + str(min_len) if min_len else 'any number of'} integers >= {low}")

  need(tasks.known_group(c.group), "group",
       f"choose C<n> / D<n> for any n >= 1 or one of {sorted(tasks.GROUP_ACTIONS)}")
  need(c.model in tasks.MODELS, "model", f"choose one of {tasks.MODELS}")
  need(c.architecture in tasks.ARCHITECTURES, "architecture",
       f"choose one of {tasks.ARCHITECTURES}")
  need(isinstance(c.dataset, str) and c.dataset, "dataset",
       "'mnist', 'point_sets' or a tensorflow-datasets name")
  sizes("conv_features")
  sizes("pools")
  need(len(c.pools) == len(c.conv_features), "pools",
       f"need one pool window per conv ({len(c.conv_features)}); 1 means no pooling")
  sizes("dense_features", min_len=0)
  sizes("mlp_features", min_len=0)
  integer("kernel_size", 1)
  sizes("kernel_sizes", min_len=0)
  need(not c.kernel_sizes or len(c.kernel_sizes) == len(c.conv_features), "kernel_sizes",
       f"need one kernel size per conv ({len(c.conv_features)}), or () for kernel_size everywhere")
  need(c.impl in ops.IMPLS or "=" in c.impl, "impl",
       f"choose one of {ops.IMPLS}, or one per layer kind as 'lift_conv=kernels,...'")
  if c.model == "equivariant" and c.architecture == "cnn" and tasks.known_group(c.group):
    action = tasks.group_action(c)
    for layer in ("lift_conv", "group_conv", "group_dense"):
      try:
        ops.resolve_impl(c.impl, layer, action.group)
      except ValueError as e:
        need(False, "impl", str(e))
    if ops.resolve_impl(c.impl, "lift_conv", action.group) == "kernels":
      k = (c.kernel_sizes or (c.kernel_size,))[0]
      need(k % 2 == 1, "impl", f"the 'kernels' input lift needs an odd first kernel, got {k}")
      try:
        image_actions.kernel_table(action, k)
      except ValueError as e:
        need(False, "impl", str(e))
  need(c.conv_form in spatial.CONV_FORMS + ("measured",), "conv_form",
       f"choose one of {spatial.CONV_FORMS + ('measured',)}")
  need(c.kernel_gradient in spatial.WEIGHT_GRADS, "kernel_gradient",
       f"choose one of {spatial.WEIGHT_GRADS}")
  need(c.conv_form != "measured" or c.kernel_gradient == "auto", "kernel_gradient",
       "conv_form='measured' measures the kernel gradients with the conv forms; leave "
       "kernel_gradient 'auto'")
  for field in ("conv_form", "kernel_gradient"):
    need(c[field] == "auto" or (c.model == "equivariant" and c.architecture == "cnn"), field,
         "sets the convs of the equivariant cnn (model='equivariant', architecture='cnn'); "
         "this model would ignore it: leave it 'auto'")
  need(c.hidden in models.HIDDEN, "hidden", f"choose one of {models.HIDDEN}")
  if c.hidden == "gcnn":
    need(c.model == "equivariant" and c.architecture == "cnn", "hidden",
         "G-CNN layers are for the equivariant cnn (model='equivariant', architecture='cnn')")
    ks = models.kernel_sizes(tuple(c.kernel_sizes) or c.kernel_size, len(c.conv_features))
    try:
      gcnn.kernel_turns(tasks.group_action(c), ks[0])
      # The map size is known up front for MNIST; others' pools are checked at model init.
      size = tasks.data_spec(c).input_shape[0] if c.dataset in ("mnist", "rotated_mnist") else None
      models.check_gcnn(ks, tuple(c.pools), size)
    except ValueError as e:
      need(False, "hidden", str(e))
  for f in ("batch_size", "num_epochs", "eval_batch_size", "log_every_steps", "eval_turns",
            "eval_every_epochs", "keep_checkpoints"):
    integer(f, 1)
  integer("microbatches", 0)    # 0: the fastest on this machine, measured (experiments/budget.py)
  need(isinstance(c.head_apart, bool), "head_apart", "must be True or False")
  need(not c.head_apart or (c.model == "equivariant" and c.architecture == "cnn"),
       "head_apart", "splits the equivariant cnn at its head (model='equivariant', "
       "architecture='cnn')")
  need(c.cpu_fusions in steps.CPU_FUSIONS, "cpu_fusions", f"choose one of {steps.CPU_FUSIONS}")
  for f in ("max_train_examples", "max_test_examples", "checkpoint_every_steps",
            "warmup_steps", "seed"):
    integer(f, 0)
  need(not (c.eval_turns > 1 and (c.architecture != "cnn" or c.dataset == "point_sets")),
       "eval_turns", "turns images: needs the cnn architecture on an image dataset")
  lr, wd = c.learning_rate, c.weight_decay
  need(isinstance(lr, numbers.Real) and math.isfinite(lr) and lr > 0, "learning_rate",
       "must be a finite number > 0")
  need(isinstance(wd, numbers.Real) and math.isfinite(wd) and wd >= 0, "weight_decay",
       "must be a finite number >= 0")
  need(c.schedule in ("cosine", "constant"), "schedule", "choose 'cosine' or 'constant'")
  need(c.labels in ("joint", "class"), "labels", "choose 'joint' or 'class'")
  need(not c.train_rotated or (c.architecture == "cnn" and c.dataset != "point_sets"),
       "train_rotated", "turns images: needs the cnn architecture on an image dataset")
  b = c.train_budget_s
  need(isinstance(b, numbers.Real) and math.isfinite(b) and b >= 0, "train_budget_s",
       "must be a number of seconds >= 0 (0: no budget, train num_epochs)")
  for f, top in (("train_scale", 1.0), ("train_shift", 14.0)):
    v = c[f]
    need(isinstance(v, numbers.Real) and 0 <= v < top, f, f"must be a number in [0, {top:g})")
    need(not v or c.train_rotated, f, "augments the continuous turns: needs train_rotated=True")
  need(c.holdout in ("test", "validation"), "holdout", "choose 'test' or 'validation'")
  need(c.interpolation in actions.INTERPOLATIONS, "interpolation",
       f"choose one of {actions.INTERPOLATIONS}")
  need(isinstance(c.norm, bool), "norm", "must be True or False")
  need(isinstance(c.dropout, numbers.Real) and 0 <= c.dropout < 1, "dropout",
       "must be a number in [0, 1)")
  need(isinstance(c.label_smoothing, numbers.Real) and 0 <= c.label_smoothing < 1,
       "label_smoothing", "must be a number in [0, 1)")
  integer("data_seed", 0)
  need(c.head_pool in models.HEAD_POOLS, "head_pool", f"choose one of {models.HEAD_POOLS}")
  need(not (c.dataset == "rotated_mnist" and c.test_transformed), "test_transformed",
       "rotated_mnist's test digits are already turned by their own angles; set it to False")
  need(c.microbatches == 0 or c.batch_size % c.microbatches == 0, "microbatches",
       f"must divide config.batch_size = {c.batch_size}")
