"""Baselines with the default's training budget: the same CNN, not equivarified (10 logits).

``plain.py``: trained on upright digits, tested on rotated ones.
``plain.py:augmented``: trained with random quarter-turn augmentation.
``:smoke`` / ``:augmented_smoke``: seconds-long versions.
"""

from experiments.configs import default


def get_config(variant: str = ""):
  augmented = variant.startswith("augmented")
  rest = variant[len("augmented"):].lstrip("_") if augmented else variant
  if rest not in ("", "smoke"):
    raise ValueError(f"unknown variant {variant!r} of the plain config; use '', 'augmented', "
                     f"'smoke' or 'augmented_smoke'")
  c = default.get_config(rest)
  c.model = "plain"
  c.train_transformed = augmented
  return c
