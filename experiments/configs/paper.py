"""The authors' own network (their V1 code), equivarified over C4 as in the paper's Figure 3.

3x3 'same' convs with 80, 80 and 32 filters and ReLU (conv1 on the 4 rotated copies -> 320
channels; conv2 on the 320-channel stack -> 320; conv3 -> 128), 4x4 max pool with stride 4
-> 7x7x128, dense 1024 with ReLU, dense 10, lifted to 40 logits; Adam at 1e-4, batch 200.
About 1 GMAC per image: it builds, trains and passes its equivariance test here, but a full
training run is for an accelerator (`:short` trains on 6,000 images for a CPU figure).
"""

from experiments.configs import default, variants

VARIANTS = ("", "short", "smoke")


def get_config(variant: str = ""):
  variant = variants.parse(variant, VARIANTS, "paper")
  c = default.base_config()
  c.conv_features = (80, 80, 32)
  c.pools = (1, 1, 4)
  c.dense_features = (1024,)
  c.learning_rate = 1e-4
  c.schedule = "constant"
  c.batch_size = 200
  # The batch in slices (the same gradient): how many is measured on the machine before
  # training (experiments/budget.py; a few minutes of a run of hours). The fastest count moved
  # with huge pages for malloc (experiments/host_memory.py): 8 slices before, 4 in make
  # bench-peers' measurement at batch 128 on 2026-12-03 (docs/performance.md).
  c.microbatches = 0
  # XLA's own convs and kernel gradients for every conv (not the library's "auto": Winograd's
  # form for the wide convs, its kernel gradient from its tiles), on a 2-core AMD EPYC
  # (2026-12-03): the step at batch 128 as 4 x 32 ran 1.62x as fast in `python -m
  # experiments.bench --only=cpu_fusions` (53.5 against 33.1 images/s, 62% of the matmul peak
  # executed), 1.11x in `--only=conv_forms` half an hour later (45.9 against 41.4; as 8 x 16
  # 1.01x), and never slower. XLA CPU's default compilation: YNNPACK's dots alone or none
  # were no faster (docs/performance.md). The runner's own measurement (--config.conv_form=
  # measured, 2026-12-04, 4 x 50 at batch 200) preferred Winograd's form for every 3x3 conv by
  # 1.12x and this pair to the library's by 1.02x: no fixed pair wins every run. "measured"
  # decides per machine at four compilations and 28 V1 steps a start; the benches on this
  # machine type mostly preferred this pair, so the configs keep it.
  c.conv_form = "xla"
  c.kernel_gradient = "xla"
  c.num_epochs = 10
  c.eval_batch_size = 500
  c.log_every_steps = 5
  # A full run is hours on a CPU: a checkpoint every 50 steps (about 4 minutes at 40 images/s),
  # not only at the end of each 300-step epoch, so an interruption loses little.
  c.checkpoint_every_steps = 50
  if variant == "short":
    c.microbatches = 4          # 30 steps: not worth measuring; the full run's choice above
    c.max_train_examples = 6000
    c.num_epochs = 1
  elif variant == "smoke":
    c.microbatches = 8
    c.max_train_examples = 400
    c.max_test_examples = 200
    c.num_epochs = 1
    c.eval_batch_size = 100
    c.make_figures = False
  return c
