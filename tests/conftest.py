"""Shared test set-up: float32 everywhere, NaN checks on, hypothesis profiles for 2 CPU cores."""

import os

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_debug_nans", True)

# Shapes are small but each example runs jitted JAX code; no per-example deadline, a
# modest example count. `HYPOTHESIS_PROFILE=thorough pytest` draws more.
settings.register_profile("default", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def keys():
  """An endless supply of fresh PRNG keys from a fixed seed."""
  def gen():
    key = jax.random.key(0)
    while True:
      key, sub = jax.random.split(key)
      yield sub
  it = gen()
  return lambda: next(it)


MNIST_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                         "mnist"))


@pytest.fixture(scope="session")
def mnist_dir():
  """The folder of the four MNIST IDX files; tests that need real digits take this fixture
  and are skipped (with the reason shown by ``-ra``) where the files are absent."""
  from eqnn import data
  missing = [f for f, _ in data.MNIST_FILES.values()
             if not os.path.exists(os.path.join(MNIST_DIR, f))]
  if missing:
    pytest.skip(f"MNIST IDX files {missing} not in {MNIST_DIR}")
  return MNIST_DIR
