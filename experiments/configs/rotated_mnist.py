"""MNIST-rot's protocol (12,000 training digits, 50,000 test digits, every one turned by its own
uniform angle), built offline from the MNIST files: ``make rotmnist`` runs the best network.

Training sees class labels only (MNIST-rot has no angles): the loss is cross entropy on the
invariant readout. Each training digit is turned again by a fresh random angle every step
(augmentation). The lift over C_n for n = 8, 16 resamples the input (approximately
equivariant; its quarter turns are exact); hidden layers move channel blocks exactly.

Variants (``--config=experiments/configs/rotated_mnist.py:c8``): "" (the best: C16, bicubic),
"c4", "c8", "c16", "d4", "d8", "plain" (the same CNN, not lifted, same augmentation), and
"smoke" (seconds: what the tests run). Add ``--config.holdout=validation`` to train on the
10,000 and measure on the 2,000 validation digits instead of the test digits.
"""

from experiments.configs import default, variants

VARIANTS = ("", "c4", "c8", "c16", "d4", "d8", "plain", "smoke")


def get_config(variant: str = ""):
  variant = variants.parse(variant, VARIANTS, "rotated_mnist")
  c = default.base_config()
  c.dataset = "rotated_mnist"
  c.holdout = "test"
  c.test_transformed = False      # the test digits are already turned
  c.train_rotated = True          # and every training digit again, by a fresh angle each step
  c.labels = "class"              # no angles in MNIST-rot: the invariant readout's loss
  c.group = "C16"
  c.interpolation = "bicubic"
  c.model = "equivariant"
  c.conv_features = (16, 24, 32, 48)
  c.pools = (1, 2, 2, 2)
  c.dense_features = (64,)
  c.kernel_size = 5
  c.norm = True
  c.dropout = 0.0
  c.batch_size = 64
  c.num_epochs = 20
  c.learning_rate = 2e-3
  c.weight_decay = 1e-4
  c.warmup_steps = 200
  c.eval_batch_size = 500
  c.eval_every_epochs = 5
  c.log_every_steps = 50
  group = {"c4": "C4", "c8": "C8", "c16": "C16", "d4": "D4", "d8": "D8"}.get(variant)
  if group:
    c.group = group
  if variant == "plain":
    c.model = "plain"
  if variant == "smoke":
    c.group = "C8"
    c.conv_features = (4, 8)
    c.pools = (2, 2)
    c.dense_features = (16,)
    c.kernel_size = 3
    c.max_train_examples = 256
    c.max_test_examples = 256
    c.num_epochs = 1
    c.warmup_steps = 1
    c.eval_batch_size = 128
    c.eval_every_epochs = 1
    c.log_every_steps = 2
    c.eval_turns = 2
    c.make_figures = False
  return c
