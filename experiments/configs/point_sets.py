"""S4 permuting the 4 points of a set: a lifted MLP reads the class and the permutation.

Synthetic data (eqnn.data.point_sets): 4 points in the plane, class = how many lie in the
unit disc (5 classes), canonical order by x. Trained on canonically ordered sets, tested
on randomly permuted ones: 24 x 5 = 120 logits, 40 epochs of 20,000 sets, about a
minute on 2 CPU cores. Compare
with ``--config.model=plain``. Variants: ``:smoke``.
"""

from experiments.configs import default, variants

VARIANTS = ("", "smoke")


def get_config(variant: str = ""):
  smoke = variants.parse(variant, VARIANTS, "point_sets") == "smoke"
  c = default.get_config(variant or "stacked")   # the paper's stacking, as its rows were measured
  c.dataset = "point_sets"
  c.group = "S4"
  c.architecture = "mlp"
  c.mlp_features = (128, 128) if not smoke else (16,)
  c.num_epochs = 40 if not smoke else 2
  c.learning_rate = 3e-3
  c.make_figures = False
  return c
