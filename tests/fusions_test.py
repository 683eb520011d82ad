"""A step compiled with XLA CPU's fusions is traced in the forms that suit them
(experiments.fusions.jit_for): the Fourier transforms as "sums" and the biases' gradients as
"dot"s where YNNPACK's reduction fusions are off, "dots" and "reduce" otherwise."""

import jax
import jax.numpy as jnp
import pytest

from eqnn import fourier, spatial
from experiments import fusions


def test_each_fusion_choice_traces_the_transforms_that_suit_it():
  x, w = jnp.ones((2, 4, 3)), jnp.ones((4, 3, 5))
  lin = lambda a, k: jnp.sum(a[..., :, None] * k, -2)            # no dot of its own
  f = lambda x, w: fourier.circulant_apply(x, w, 4, lin, axis=1)
  for choice in fusions.FIXED_FUSIONS:
    options = fusions.compiler_options(choice)
    form, bias = fusions.traced_forms(options)
    cpu = jax.default_backend() == "cpu"
    native = cpu and choice != "default"
    assert form == ("sums" if native else "dots"), choice
    assert bias == ("dot" if native else "reduce"), choice
    text = fusions.jit_for(f, compiler_options=options).lower(x, w).as_text()
    assert ("dot_general" in text) == (form == "dots"), choice
    biased = lambda b: jnp.sum(spatial.add_bias(x, b) ** 2)       # its gradient: a dot or not
    text = fusions.jit_for(jax.grad(biased), compiler_options=options).lower(
        jnp.ones(3)).as_text()
    assert ("dot_general" in text) == native, choice
    jitted = fusions.jit_for(f, compiler_options=options)
    assert jnp.allclose(jitted(x, w), fourier.circulant_apply(x, w, 4, lin, axis=1, form="dots"))
  assert fourier._TRANSFORMS._stack == ["dots"]                   # the blocks are left
  assert spatial.default_bias_sums() == "reduce"
  with pytest.raises(ValueError, match="choose one of"):
    fusions.compiler_options("auto")
