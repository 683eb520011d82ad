"""Cyclic translations as the group: MNIST on a torus, shifted by multiples of 7 pixels.

The group is C4 x C4 (16 shifts, eqnn.actions.translations(28, 28, 7)); the lifted
network predicts the digit and the shift, exactly equivariant to the shifts it was built
for. Trained on unshifted digits, tested on digits rolled by a random element. Compare
with ``--config.model=plain``. Variants: ``:smoke``.
"""

from experiments.configs import default, variants

VARIANTS = ("", "smoke")


def get_config(variant: str = ""):
  smoke = variants.parse(variant, VARIANTS, "translations") == "smoke"
  c = default.get_config(variant or "stacked")   # the paper's stacking, as its rows were measured
  c.group = "T4x4"
  c.conv_features = (8,) if not smoke else (4,)
  c.pools = (4,)
  c.dense_features = (64,) if not smoke else (16,)
  c.num_epochs = 2 if not smoke else c.num_epochs
  return c
