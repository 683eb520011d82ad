"""Baselines with the default's training budget: the same CNN, not equivarified (10 logits).

``plain.py``: trained on upright digits, tested on rotated ones.
``plain.py:augmented``: trained with random quarter-turn augmentation.
``:smoke`` / ``:augmented_smoke``: seconds-long versions.
"""

from experiments.configs import default, variants

VARIANTS = ("", "smoke", "augmented", "augmented_smoke")


def get_config(variant: str = ""):
  variant = variants.parse(variant, VARIANTS, "plain")
  augmented = variant.startswith("augmented")
  c = default.get_config("smoke" if variant.endswith("smoke") else "stacked")
  c.model = "plain"
  c.train_transformed = augmented
  return c
