"""The default run (``make train``): a C4-equivarified CNN on MNIST, trained upright, tested
rotated, with G-CNN hidden layers (every slot's map in the image's frame, kernels turned).

Variants: ``--config=experiments/configs/default.py:stacked`` is the paper's Figure 3 stacking
(each slot in its own frame, 16-32-64 filters, XLA CPU's fusions chosen by measuring; the
default until 2026-12-02, and the "default" network that ``make bench`` and ``make
bench-peers`` time);
``--config=experiments/configs/default.py:smoke`` trains a shrunken model on a few hundred
images in seconds (what the tests use). Override any field on the command line, e.g.
``--config.num_epochs=2``.
"""

import ml_collections

from experiments.configs import variants

VARIANTS = ("", "stacked", "smoke")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Data: "mnist" reads the four IDX files in data_dir; "rotated_mnist" builds MNIST-rot's
  # protocol from them (configs/rotated_mnist.py); any other name goes to tfds.
  c.dataset = "mnist"
  c.data_dir = "../shared/data/mnist"
  c.tfds_data_dir = ""
  c.tfds_download = False
  c.max_train_examples = 0        # 0: all
  c.max_test_examples = 0
  c.data_seed = 0                 # rotated_mnist: which digits and angles (not the training seed)
  c.holdout = "test"              # rotated_mnist: "test" (50,000) or "validation" (2,000)
  # Group acting on the input images: "C4" (quarter turns), "D4" (and reflections), "C2", "C1".
  c.group = "C4"
  # Resampling of the groups that turn off the pixel grid (C8, C16, D8) and of the training
  # turns (train_rotated): "bilinear" or "bicubic".
  c.interpolation = "bilinear"
  c.train_transformed = False     # False: upright training images only (the paper's setting)
  c.train_rotated = False         # True: each training image turned by a random angle (any)
  # With train_rotated: also magnify by a uniform factor in [1 - s, 1 + s] and shift by up to
  # this many pixels along each axis (augmentation beyond the group).
  c.train_scale = 0.0
  c.train_shift = 0.0
  # "joint": train on (group element, class) labels, the paper's equivariant labels;
  # "class": on class labels only, through the invariant readout (data without angles).
  c.labels = "joint"
  c.test_transformed = True       # test images moved by a seeded random group element
  # Model: "equivariant" (the equivarified network) or "plain" (the same CNN, not lifted).
  c.model = "equivariant"
  c.architecture = "cnn"          # "cnn" (images) or "mlp" (e.g. point sets)
  c.mlp_features = (128, 128)
  # Filters per group element; pooling early is free (it commutes with the block action).
  c.conv_features = (16, 32, 64)
  c.pools = (2, 2, 2)
  c.dense_features = (128,)
  c.kernel_size = 3
  c.kernel_sizes = ()             # one per conv, e.g. (5, 3, 3); (): kernel_size everywhere
  c.norm = False                  # batch norm (statistics shared over |G|) before each ReLU
  c.dropout = 0.0                 # dropout before the last dense layer, training only
  c.head_pool = "none"            # "max"/"mean": pool the last conv map over space first
  c.hidden = "stacked"            # "gcnn": G-CNN convs, kernels turned (eqnn.models.HIDDEN)
  c.impl = "auto"                 # per layer kind: eqnn.ops.AUTO
  # How every 2-D conv computes itself and its kernel's gradient (eqnn.spatial.conv's form and
  # weight_grad): "auto" picks per conv and backend. conv_form = "measured": the runner times
  # the step in each pair of experiments.budget.FORM_CANDIDATES on this machine before
  # training and keeps the fastest (plan.json; kernel_gradient then stays "auto").
  c.conv_form = "auto"            # "xla" or "winograd" for all, or "measured"
  c.kernel_gradient = "auto"      # "xla" or "windows" for all
  # Optimisation.
  c.batch_size = 128
  # > 1: the same gradient over that many slices in sequence; 0: the count a step runs fastest
  # in on this machine, measured before training (experiments/budget.py).
  c.microbatches = 1
  # With micro-batches: only the convs in slices, the head once on the whole batch's features
  # (its weights read and their gradient written once per step; the same gradient; all the
  # slices' activations kept until then). For a large lifted head (the authors' V1 network's
  # 6.4 M weights); not reliably faster for this small one (0.89-1.08x, docs/performance.md).
  c.head_apart = False
  # How XLA's CPU backend compiles the update: "default", "no_ynnpack" (without its YNNPACK
  # fusions), "ynnpack_dots" (its dots alone), or "auto": the fastest of the three, measured
  # before training (plan.json).
  c.cpu_fusions = "default"
  c.num_epochs = 5
  # > 0: end the whole run within this many seconds of the process's start: the epochs are
  # measured to fit, at most num_epochs (experiments/budget.py; kept in WORKDIR/plan.json).
  c.train_budget_s = 0.0
  c.learning_rate = 2e-3
  c.schedule = "cosine"           # "cosine" (with warmup) or "constant"
  c.warmup_steps = 100
  c.weight_decay = 5e-4           # AdamW when > 0
  c.label_smoothing = 0.0         # alpha of the smoothed targets (0: integer labels)
  c.eval_batch_size = 1000
  # > 1: also report the class accuracy averaged over that many turns of each test input by
  # fractions of the group's rotation step (test_class_accuracy_turned), after training.
  c.eval_turns = 1
  c.eval_every_epochs = 1
  # Logging and checkpoints.
  c.log_every_steps = 20
  c.checkpoint_every_steps = 0    # 0: at the end of every epoch only
  c.keep_checkpoints = 2
  c.make_figures = True
  return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Seconds on a CPU: a tiny network on a few hundred images."""
  c.conv_features = (4, 8)
  c.pools = (2, 2)
  c.dense_features = (16,)
  c.max_train_examples = 512
  c.max_test_examples = 256
  c.batch_size = 64
  c.num_epochs = 2
  c.warmup_steps = 2
  c.eval_batch_size = 128
  c.log_every_steps = 4
  c.make_figures = False
  return c


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = base_config()
  variant = variants.parse(variant, VARIANTS, "default")
  if variant == "":
    # G-CNN hidden layers with half the filters per group element. On a 2-core Intel AVX-512
    # machine (2026-12-02), each alone: 99.0% joint after epoch 4 at 0.40 of the stacked
    # network's time to it, 99.20% at the end against 99.10% (README, "Results"); train
    # steps 2.49x as fast (`python -m experiments.bench --only=networks`), joint accuracy
    # per epoch about the same.
    c.hidden = "gcnn"
    c.conv_features = (8, 16, 32)
    # The batch of 128 as 2 slices of 64 (the same gradient: no batch statistics here), XLA
    # CPU's fusions measured before training: with YNNPACK's reduction and conv fusions off
    # the G-CNN convs run at batch 64-128 at up to twice their rate in 16-image slices under
    # XLA's default (`python -m experiments.bench --only=conv_passes`); the step in the
    # default fusions needs the small slices (8 x 16), in the others the large ones. A 2-core
    # Intel Xeon (2026-12-04): make train 3,543 images/s (YNNPACK's dots alone chosen; the
    # step 35 ms against 54 in the default fusions) against 2,740 as 8 x 16 in the default
    # fusions, 99.0% joint at 101 s against 107 (the measurement costs a few seconds; the
    # README's "Results" and docs/performance.md give both runs' commands).
    c.microbatches = 2
    c.cpu_fusions = "auto"
  if variant == "stacked":
    # XLA CPU's YNNPACK fusions or not, measured before training (experiments/budget.py): the
    # stacking's convs (16 -> 32 and 32 -> 64 channels per element in C4's Fourier basis) ran
    # its step 1.43x faster without them on a 2-core AMD EPYC (2026-12-03) and 1.27x on an
    # Intel one (`python -m experiments.bench --only=cpu_fusions`); make train's G-CNN network
    # the same either way (0.99-1.01x), so it does not pay for the measurement.
    c.cpu_fusions = "auto"
  if variant == "smoke":
    c = smoke(c)
  return c
