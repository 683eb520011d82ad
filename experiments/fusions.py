"""XLA CPU's fusions of a compiled step, and the forms of its sums traced to suit them:
``jax.jit``'s ``compiler_options`` for a config's ``cpu_fusions`` (:func:`compiler_options`)
and :func:`jit_for`, which compiles a function with them and traces it with the Fourier
transforms and the biases' gradients in the forms that suit them (:func:`traced_forms`):
where YNNPACK's reduction fusions are off, XLA compiles a reduction over many positions
slowly and broadcast sums over the group axis well; with them on, the other way round
(`python -m experiments.bench --only=reduction_forms`, docs/performance.md)."""

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


def native_reductions(options: dict | None) -> bool:
  """Whether ``options`` leave reductions to XLA's own CPU code: YNNPACK's elementwise and
  reduction fusions off (``no_ynnpack``, ``ynnpack_dots``)."""
  kinds = (options or {}).get(YNN_FUSION_OPTION)
  return kinds is not None and not any(k in kinds for k in ("ELTWISE", "REDUCE"))


# The forms a step is traced in, (Fourier transforms, biases' gradients): eqnn.fourier.
# TRANSFORMS' and eqnn.spatial.BIAS_SUMS'.
FUSED_FORMS = ("dots", "reduce")         # XLA's default fusions, accelerators
NATIVE_FORMS = ("sums", "dot")           # reductions left to XLA's own CPU code


def traced_forms(options: dict | None) -> tuple[str, str]:
  """``(Fourier transforms, biases' gradients)`` for a function compiled with ``options``
  (:func:`compiler_options`'s): :data:`NATIVE_FORMS` where :func:`native_reductions`, else
  :data:`FUSED_FORMS`. `python -m experiments.bench --only=reduction_forms` on a 2-core Intel
  Xeon (2026-12-04, batch 128 as 8 x 16, 5 alternated rounds, peak 295): V1's train step with
  YNNPACK's dots alone (XLA's convs, its head apart) 68.0 images/s in the fused forms, 75.6
  with the transforms as sums, 88.6 with the biases' gradients as dots too; the paper's
  stacking without YNNPACK 1,238 / 1,345 / 1,502; with XLA's default fusions the sums ran
  them at 0.47x and 0.33x (YNNPACK's reduction fusions take them), both native forms at 0.51x
  and 0.34x (docs/performance.md)."""
  return NATIVE_FORMS if native_reductions(options) else FUSED_FORMS


def jit_for(fn, compiler_options: dict | None = None, forms: tuple[str, str] | None = None,
            **jit_kwargs):
  """``jax.jit(fn, compiler_options=compiler_options, **jit_kwargs)``, with ``fn`` traced in
  the forms that suit those options (:func:`traced_forms`), or in ``forms`` where given (the
  bench that compares them)."""
  transforms, biases = traced_forms(compiler_options) if forms is None else forms

  @functools.wraps(fn)
  def traced(*args, **kwargs):
    with fourier.transforms(transforms), spatial.bias_sums(biases):
      return fn(*args, **kwargs)
  return jax.jit(traced, compiler_options=compiler_options, **jit_kwargs)
