"""Shared test set-up: float32 everywhere, NaN checks on, hypothesis profiles for 2 CPU cores."""

import os
import shutil
import tempfile

import jax
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_debug_nans", True)

# Tests compile with XLA's backend optimisation level 0 (how hard LLVM optimises the CPU
# code; XLA's default is 3): the same computations, to float rounding, compiled faster and
# run slower. The suite is mostly compilation of small programs: this alone took
# `make test` from 574-623 s to 454 s on 2 cores (2026-12-02; 426 s with the parallel tests'
# subprocesses at level 0 too and the report fixture's coarser sweep). Set before JAX starts its
# backend, so the workers and the runs they start as subprocesses inherit it; a level the
# user set in XLA_FLAGS is kept (`XLA_FLAGS=--xla_backend_optimization_level=3 make test`
# runs the tests compiled as the experiments are).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()

# One persistent compilation cache for this test session, shared by the pytest workers and
# the runs they start as subprocesses (which inherit the environment): many tests compile the
# same smoke networks, and a subprocess's smoke run took 9 s cold and 4 s with the cache
# warm. Keyed by the programs themselves, so a hit is the same executable; removed at the end.
# Every program is kept, however fast it compiled: a smoke run compiles some 60 small ones
# (eager ops, metrics, the input pipeline's), about 3 s together at the tests' optimisation
# level, and a warm smoke run took 6.2 s with them cached against 9.0 s with only those over
# half a second (2026-12-03, 2-core AMD EPYC; the cache of a whole run is under 1 MB).
# The controller sets it; the workers and their subprocesses inherit it (JAX reads both
# variables at import). A cache the user set is left alone.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="eqnn-test-jax-cache-")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
  if _OWN_CACHE:                # the process that made the cache: the controller
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)

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
