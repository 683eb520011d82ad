"""Configs: variants parsed one way everywhere, and bad values named before anything runs."""

import json

import pytest

from experiments import validation
from experiments.configs import d4, default, paper, plain, point_sets, translations

CONFIGS = [default, paper, plain, d4, point_sets, translations]


@pytest.mark.parametrize("module", CONFIGS, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_every_variant_builds_and_unknown_ones_are_refused(module):
  for v in module.VARIANTS:
    validation.validate_config(module.get_config(v))
  with pytest.raises(ValueError, match="unknown variant 'huge'.*choose one of"):
    module.get_config("huge")


@pytest.mark.parametrize("field, value, match", [
    ("group", "C0", "config.group = 'C0'"),
    ("group", "Z4", "choose C<n> / D<n> for any n >= 1"),
    ("model", "resnet", "config.model"),
    ("pools", (2,), "one pool window per conv"),
    ("pools", (0, -1, 2), r"config.pools = \(0, -1, 2\): need at least 1 integers >= 1"),
    ("batch_size", 0, "must be an integer >= 1"),
    ("schedule", "linear", "cosine"),
    ("keep_checkpoints", 0, "config.keep_checkpoints = 0: must be an integer >= 1"),
    ("max_train_examples", -5, "config.max_train_examples = -5: must be an integer >= 0"),
    ("kernel_size", 0, "config.kernel_size = 0"),
    ("conv_features", (0, 8, 8), "config.conv_features"),
    ("eval_every_epochs", 0, "config.eval_every_epochs = 0"),
    ("impl", "fourier", "'fourier' implementation is not available for lift_conv"),
    ("impl", "fft", "choose one of"),
    ("impl", "lift_conv=fft", "'lift_conv=fft' is not"),
    ("impl", "head=vmap", "each part is kind=name"),
    ("impl", "group_conv=kernels", "'kernels' implementation is not available for group_conv"),
    ("kernel_size", 4, None),      # with impl lift_conv=kernels: below
    ("learning_rate", float("nan"), "finite number > 0"),
    ("microbatches", 3, "must divide config.batch_size = 128"),
    ("labels", "angles", "choose 'joint' or 'class'"),
    ("kernel_sizes", (5, 3), "one kernel size per conv"),
    ("kernel_sizes", (5, 0, 3), "integers >= 1"),
    ("label_smoothing", 1.0, "config.label_smoothing = 1.0: must be a number in"),
    ("cpu_fusions", "fast", r"config.cpu_fusions = 'fast': choose one of \('default'"),
])
def test_bad_config_values_are_named(field, value, match):
  c = default.get_config("stacked")
  c[field] = value
  if match is None:            # an even kernel is fine, but not for turning kernels
    validation.validate_config(c)
    c.impl, match = "lift_conv=kernels", "'kernels' input lift needs an odd first kernel, got 4"
  with pytest.raises(validation.ConfigError, match=match):
    validation.validate_config(c)


def test_the_head_apart_is_for_the_equivariant_cnn():
  c = default.get_config("stacked")
  c.head_apart = True
  validation.validate_config(c)
  c.model = "plain"
  with pytest.raises(validation.ConfigError, match="config.head_apart = True: splits the "
                     "equivariant cnn at its head"):
    validation.validate_config(c)


def test_implementations_per_layer_kind():
  """impl names one form per layer kind; the turned-kernel lift only where the pixel grid's
  own symmetries act (C4, D4: yes; C8's resampled turns: no)."""
  c = default.get_config("stacked")
  c.impl = "lift_conv=kernels,group_conv=expanded"
  validation.validate_config(c)
  c.group = "D4"
  validation.validate_config(c)
  c.group = "C8"
  with pytest.raises(validation.ConfigError, match="rotations and mirrors of the pixel grid"):
    validation.validate_config(c)


def test_gcnn_hidden_layers_are_checked_before_anything_runs():
  """hidden="gcnn": any rotation group (C8's resampled turns too), odd kernels, pooling that
  tiles each map before the last conv; not translations, not the plain model."""
  c = default.get_config()
  c.hidden = "gcnn"
  validation.validate_config(c)
  c.group = "C8"
  validation.validate_config(c)
  for field, value, match in [("hidden", "steerable", "choose one of"),
                              ("group", "T4x4", "rotations and mirrors of the pixel grid"),
                              ("kernel_size", 4, "odd kernels"),
                              ("pools", (3, 2, 2), "does not tile its 28 x 28 map"),
                              ("model", "plain", "for the equivariant cnn")]:
    bad = default.get_config()
    bad.hidden = "gcnn"
    bad[field] = value
    with pytest.raises(validation.ConfigError, match=match):
      validation.validate_config(bad)


def test_a_run_saved_before_head_apart_resumes_with_it_on_or_off():
  """A run's saved config from before the field existed reads as ``head_apart = False``, and
  the field may change on a rerun (the same gradient), as micro-batches may."""
  from experiments import workdir
  c = default.get_config("stacked")
  saved = json.loads(json.dumps(c.to_dict()))
  del saved["head_apart"]
  assert workdir.differences(saved, c) == []
  c.head_apart = True
  assert workdir.differences(saved, c) == []
  c.conv_features = (8, 16, 32)                   # control: a run-shaping field is named
  assert workdir.differences(saved, c) == ["conv_features: [16, 32, 64] -> [8, 16, 32]"]
