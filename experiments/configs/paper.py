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
  # Only the convs in those slices, the head once on the whole batch: its 6.4 M weights read
  # and their gradient written once per step, not once per slice. On a 2-core Intel Xeon
  # (AVX-512, 2026-12-04, batch 128, the library's conv forms) 1.43x, 1.35x and 1.57x as fast
  # as the head in every slice of 4, 8 and 16 (`python -m experiments.bench --only=head_apart`;
  # 1.09x, 1.08x, 1.52x in a scratch run of the same comparison: docs/performance.md).
  c.head_apart = True
  # The convs' forms are measured per machine before training (four compilations and 28 V1
  # steps, minutes of a run of hours): no fixed pair wins on every machine type. On a 2-core
  # AMD EPYC (2026-12-03) XLA's own convs and kernel gradients ran 1.62x and 1.11x as fast as
  # the library's "auto" (Winograd's form for the wide convs) in two benches, the runner's
  # own measurement there once preferred Winograd's form by 1.12x; on a 2-core Intel Xeon
  # (2026-12-04) the library's ran 1.38-1.52x as fast as XLA's in five runs of the runner's
  # measurement as make bench-peers and `--only=networks` print it (at 128 as 4 x 32: 61.0 /
  # 43.0 and 64.0 / 43.6 images/s; docs/performance.md).
  c.conv_form = "measured"
  c.kernel_gradient = "auto"
  # And XLA CPU's fusions, measured together with the forms (every pair, experiments/
  # budget.py; about 8 minutes before a run of hours): on the Intel Xeon XLA's convs ran
  # 1.49x as fast with YNNPACK's dots alone as with its default fusions (a lone conv's
  # kernel gradient 3.7x, scratch), the library's forms 0.85x, and that pair was the fastest: 69.5 against
  # 65.8 images/s for the library's forms with the default fusions (128 as 8 x 16, head
  # apart; `python -m experiments.bench_peers --nets=paper_v1`, docs/performance.md).
  # With YNNPACK's reduction fusions off the step traces its Fourier transforms and biases'
  # gradients in the forms that suit that (experiments/fusions.py): the joint measurement then
  # chose xla/xla without YNNPACK, 84.8 images/s (make bench-peers, 2026-12-04, evening).
  c.cpu_fusions = "auto"
  c.num_epochs = 10
  c.eval_batch_size = 500
  c.log_every_steps = 5
  # A full run is hours on a CPU: a checkpoint every 50 steps (about 4 minutes at 40 images/s),
  # not only at the end of each 300-step epoch, so an interruption loses little.
  c.checkpoint_every_steps = 50
  if variant in ("short", "smoke"):
    # 30 steps or fewer: not worth measuring; XLA's convs and kernel gradients, as the
    # README's `make paper` row was run.
    c.conv_form, c.kernel_gradient, c.cpu_fusions = "xla", "xla", "default"
  if variant == "short":
    c.microbatches = 4          # 30 steps: not worth measuring
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
