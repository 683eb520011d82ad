"""XLA CPU's fusions of a compiled step, and the forms of its sums traced to suit them:
``jax.jit``'s ``compiler_options`` for a config's ``cpu_fusions`` (:func:`compiler_options`)
and :func:`jit_for`, which compiles a function with them and traces it with the Fourier
transforms (:func:`fourier_transforms`) and the biases' gradients (:func:`bias_sums`) in the
forms that suit them: where YNNPACK's reduction fusions are off, XLA compiles a reduction over
many positions slowly and broadcast sums over the group axis well; with them on, the other
way round (`python -m experiments.bench --only=reduction_forms`, docs/performance.md)."""

from __future__ import annotations

import functools

import jax

from eqnn import fourier, spatial

# XLA CPU's fusions of the update program: the compiler's default, none of its fusions into
# YNNPACK (XNNPACK's successor), or its dots alone (no convolutions, elementwise or reduction
# fusions). On a 2-core AVX-512 machine without YNNPACK ran the paper's stacked network's step
# 1.27-1.28x faster (1.43-1.46x on an AMD EPYC, 1.38x with its dots alone; its config sets
# "auto"), the authors' V1 network's 0.79-0.85x as fast in Winograd's form (0.94x in its
# config's XLA convs) and MNIST-rot's own step 0.39x as fast (`make rotmnist` with
# --config.cpu_fusions=auto, its plan.json); `make bench`'s section cpu_fusions,
# docs/performance.md. "auto" measures every fixed choice before training (experiments/budget.py).
CPU_FUSIONS = ("default", "no_ynnpack", "ynnpack_dots", "auto")
FIXED_FUSIONS = CPU_FUSIONS[:-1]          # what "auto" chooses among
# XLA's DebugOptions field naming the kinds of op fused into YNNPACK ("" for none).
YNN_FUSION_OPTION = "xla_cpu_experimental_ynn_fusion_type"
_YNN_FUSION_TYPES = {"no_ynnpack": "", "ynnpack_dots": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}


def refused(cpu_fusions: str, error: Exception) -> bool:
  """Whether ``error`` is this jaxlib's XLA refusing ``cpu_fusions``' (experimental) option,
  which a measurement leaves out instead of failing; the default is never refused."""
  return cpu_fusions != "default" and "ynn" in str(error)


def compiler_options(cpu_fusions: str) -> dict | None:
  """``jax.jit``'s ``compiler_options`` for a decided ``cpu_fusions`` (one of
  :data:`FIXED_FUSIONS`); None (XLA's own) on accelerators, where the option does not apply."""
  if cpu_fusions not in FIXED_FUSIONS:
    raise ValueError(f"cpu_fusions = {cpu_fusions!r}: choose one of {FIXED_FUSIONS} "
                     "('auto' is decided by measuring, before the step is built)")
  if cpu_fusions == "default" or jax.default_backend() != "cpu":
    return None
  return {YNN_FUSION_OPTION: _YNN_FUSION_TYPES[cpu_fusions]}


def fourier_transforms(options: dict | None) -> str:
  """The form of the Fourier transforms (:data:`eqnn.fourier.TRANSFORMS`) for a function
  compiled with ``options`` (:func:`compiler_options`'s): "sums" where the options turn
  YNNPACK's elementwise and reduction fusions off (``no_ynnpack``, ``ynnpack_dots``), "dots"
  otherwise (XLA's default, accelerators). `python -m experiments.bench
  --only=reduction_forms` on a 2-core Intel Xeon (2026-12-04, batch 128 as 8 x 16, 5
  alternated rounds, peak 295), the biases' gradients reduced in both: V1's train step with
  YNNPACK's dots alone (XLA's convs, its head apart) 75.6 images/s in "sums" against 68.0 in
  "dots", the paper's stacking without YNNPACK 1,345 against 1,238; with XLA's default
  fusions "sums" ran them at 0.47x and 0.33x: YNNPACK's reduction fusions take the sums
  (docs/performance.md)."""
  return "sums" if native_reductions(options) else "dots"


def native_reductions(options: dict | None) -> bool:
  """Whether ``options`` leave reductions to XLA's own CPU code: YNNPACK's elementwise and
  reduction fusions off."""
  kinds = (options or {}).get(YNN_FUSION_OPTION)
  return kinds is not None and not any(k in kinds for k in ("ELTWISE", "REDUCE"))


def bias_sums(options: dict | None) -> str:
  """How a bias's gradient is summed (:data:`eqnn.spatial.BIAS_SUMS`) for a function compiled
  with ``options``: "dot" where reductions are XLA's own (:func:`native_reductions`), "reduce"
  otherwise. `python -m experiments.bench --only=reduction_forms` (2-core Intel Xeon,
  2026-12-04, peak 295): with the sums, V1's step with YNNPACK's dots alone 88.6 images/s
  with the biases as dots against 75.6 as reductions, the stacking without YNNPACK 1,502
  against 1,345; under XLA's default fusions the dots ran V1's and the stacking's steps at
  0.94x (scratch), so "reduce" stays there."""
  return "dot" if native_reductions(options) else "reduce"


def jit_for(fn, compiler_options: dict | None = None, transforms: str | None = None,
            biases: str | None = None, **jit_kwargs):
  """``jax.jit(fn, compiler_options=compiler_options, **jit_kwargs)``, with ``fn`` traced in
  the forms that suit those options: the Fourier transforms' (:func:`fourier_transforms`) and
  the biases' (:func:`bias_sums`), or ``transforms`` and ``biases`` where given (the bench
  that compares them)."""
  form = fourier_transforms(compiler_options) if transforms is None else transforms
  bias = bias_sums(compiler_options) if biases is None else biases

  @functools.wraps(fn)
  def traced(*args, **kwargs):
    with fourier.transforms(form), spatial.bias_sums(bias):
      return fn(*args, **kwargs)
  return jax.jit(traced, compiler_options=compiler_options, **jit_kwargs)
