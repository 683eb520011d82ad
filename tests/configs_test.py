"""Configs: variants parsed one way everywhere, and bad values named before anything runs."""

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
    ("group", "C3", "config.group = 'C3'"),
    ("model", "resnet", "config.model"),
    ("pools", (2,), "one pool window per conv"),
    ("batch_size", 0, "must be positive"),
    ("schedule", "linear", "cosine"),
])
def test_bad_config_values_are_named(field, value, match):
  c = default.get_config()
  c[field] = value
  with pytest.raises(validation.ConfigError, match=match):
    validation.validate_config(c)
