"""A step compiled with XLA CPU's fusions is traced with the Fourier transforms that suit them
(experiments.fusions.jit_for): "sums" where YNNPACK's reduction fusions are off, "dots" else."""

import jax
import jax.numpy as jnp
import pytest

from eqnn import fourier
from experiments import fusions


def test_each_fusion_choice_traces_the_transforms_that_suit_it():
  x, w = jnp.ones((2, 4, 3)), jnp.ones((4, 3, 5))
  lin = lambda a, k: jnp.sum(a[..., :, None] * k, -2)            # no dot of its own
  f = lambda x, w: fourier.circulant_apply(x, w, 4, lin, axis=1)
  for choice in fusions.FIXED_FUSIONS:
    options = fusions.compiler_options(choice)
    form = fusions.fourier_transforms(options)
    cpu = jax.default_backend() == "cpu"
    assert form == ("sums" if cpu and choice != "default" else "dots"), choice
    text = fusions.jit_for(f, compiler_options=options).lower(x, w).as_text()
    assert ("dot_general" in text) == (form == "dots"), choice
    jitted = fusions.jit_for(f, compiler_options=options)
    assert jnp.allclose(jitted(x, w), fourier.circulant_apply(x, w, 4, lin, axis=1, form="dots"))
  assert fourier._transforms_default == ["dots"]                  # the context is left
  with pytest.raises(ValueError, match="choose one of"):
    fusions.compiler_options("auto")
