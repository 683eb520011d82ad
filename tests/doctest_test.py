"""The examples in the public modules' docstrings run as written (the API reference shows them)."""

import doctest
import importlib

import pytest

PUBLIC = ["eqnn", "eqnn.groups", "eqnn.actions", "eqnn.lift", "eqnn.ops", "eqnn.spatial", "eqnn.fourier",
          "eqnn.readouts", "eqnn.testing", "eqnn.data", "eqnn.report", "eqnn.export",
          "eqnn.layers", "eqnn.models", "eqnn.nnx_modules"]


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS,
                           verbose=False)
  assert result.failed == 0, f"{result.failed} docstring example(s) of {name} failed"


def test_the_reference_has_examples():
  """The examples exist (a module losing all of them would pass the test above)."""
  modules = {n: importlib.import_module(n) for n in PUBLIC}
  counts = {n: doctest.DocTestFinder().find(m) for n, m in modules.items()}
  examples = sum(len(t.examples) for tests in counts.values() for t in tests)
  assert examples >= 25
  for name in ("eqnn", "eqnn.groups", "eqnn.actions", "eqnn.lift", "eqnn.ops", "eqnn.readouts",
               "eqnn.testing"):
    assert sum(len(t.examples) for t in counts[name]) > 0, name
