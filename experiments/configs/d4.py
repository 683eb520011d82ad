"""D4 (quarter turns and mirror images) on MNIST: 80 logits, digit x group element.

Trained on upright digits, tested on digits moved by a random element of D4. Mirror
images make some digits genuinely ambiguous (0, 1, 8 look alike under r^2, f and f r^2;
3 under f r^2), so results.json also reports joint accuracy up to the digit's own symmetry.
Variants: ``:smoke``.
"""

from experiments.configs import default, variants

VARIANTS = ("", "smoke")


def get_config(variant: str = ""):
  smoke = variants.parse(variant, VARIANTS, "d4") == "smoke"
  c = default.get_config(variant or "stacked")   # the paper's stacking, as its rows were measured
  c.group = "D4"
  if not smoke:
    # 8 copies and no Fourier form for D4: a narrower network, 2 epochs.
    c.conv_features = (8, 16, 16)
    c.num_epochs = 2
  return c
