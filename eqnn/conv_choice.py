"""Which form :func:`eqnn.spatial.conv` computes a conv in, and its kernel's gradient, where
a call does not say: the defaults of a block (:func:`conv_forms`, :func:`kernel_gradients`,
both :func:`forms`), read when a function is traced; likewise how a bias's gradient is summed
(:func:`bias_sums`). :mod:`eqnn.spatial` re-exports them.
"""

from __future__ import annotations

import contextlib


class TracedDefault:
  """A choice read when a function is traced, set for a block (``with d.block(value):``):
  one of ``choices``, ``initial`` outside any block; blocks nest. A jitted function already
  traced keeps the value it was traced with. A bad value is refused by ``what``'s name."""

  def __init__(self, what: str, choices: tuple[str, ...], initial: str):
    self.what, self.choices, self._stack = what, choices, [initial]

  def check(self, value: str) -> None:
    if value not in self.choices:
      raise ValueError(f"{self.what} {value!r}: choose one of {self.choices}")

  def get(self) -> str:
    """The innermost block's value."""
    return self._stack[-1]

  @contextlib.contextmanager
  def block(self, value: str):
    self.check(value)
    self._stack.append(value)
    try:
      yield
    finally:
      self._stack.pop()


WEIGHT_GRADS = ("auto", "xla", "windows")
CONV_FORMS = ("auto", "xla", "winograd")
_WEIGHT_GRAD = TracedDefault("kernel gradients", WEIGHT_GRADS, "auto")
_FORM = TracedDefault("conv form", CONV_FORMS, "auto")


def check_forms(conv_form: str | None = None, kernel_gradient: str | None = None) -> None:
  """Refuses by name a conv form or kernel gradient that is neither None nor one of
  :data:`CONV_FORMS` / :data:`WEIGHT_GRADS`."""
  if conv_form is not None:
    _FORM.check(conv_form)
  if kernel_gradient is not None:
    _WEIGHT_GRAD.check(kernel_gradient)


def kernel_gradients(mode: str):
  """Within the block, convs traced with no ``weight_grad`` of their own use ``mode``: for
  comparing the forms on a whole network (``make bench``). It acts when a function is traced:
  a jitted function already traced keeps the form it was traced with."""
  return _WEIGHT_GRAD.block(mode)


def conv_forms(mode: str):
  """Within the block, convs traced with no ``form`` of their own use ``mode`` where it
  applies (as :func:`kernel_gradients` does for the kernel's gradient; convs Winograd's form
  cannot take keep XLA's): for comparing the forms on a whole network (``make bench``)."""
  return _FORM.block(mode)


@contextlib.contextmanager
def forms(conv_form: str | None = None, kernel_gradient: str | None = None):
  """:func:`conv_forms` and :func:`kernel_gradients` together, each only where given (None
  keeps the surrounding block's default): how a network sets its own convs' forms while it
  is traced (:class:`eqnn.models.EquivariantCNN`'s ``conv_form`` and ``kernel_gradient``)."""
  check_forms(conv_form, kernel_gradient)
  with contextlib.ExitStack() as stack:
    if conv_form is not None:
      stack.enter_context(conv_forms(conv_form))
    if kernel_gradient is not None:
      stack.enter_context(kernel_gradients(kernel_gradient))
    yield


def default_form() -> str:
  """The innermost block's conv form ("auto" outside any block)."""
  return _FORM.get()


def default_weight_grad() -> str:
  """The innermost block's kernel gradient ("auto" outside any block)."""
  return _WEIGHT_GRAD.get()


# How :func:`eqnn.spatial.add_bias` writes ``y + bias``, and so how its gradient in the bias is
# summed over every position: "reduce", XLA's reduction; "dot", the bias added as
# ``ones[N, 1] @ bias[1, C]`` (the same values), whose gradient is a dot of ones with the
# cotangent. XLA CPU's own reduction over the leading axes is slow where YNNPACK's reduction
# fusions are off: the gradient of a bias over a [16, 28, 28, 320] map, forward and backward
# with a ReLU, 12.4 ms as a reduction and 2.4 as a dot with YNNPACK's dots alone, 1.8 and 2.2
# with XLA's default fusions (2-core Intel Xeon, scratch; experiments.fusions.traced_forms
# chooses per compiled step).
BIAS_SUMS = ("reduce", "dot")
_BIAS_SUMS = TracedDefault("bias sums", BIAS_SUMS, "reduce")


def bias_sums(form: str):
  """Within the block, :func:`eqnn.spatial.add_bias` traced there writes ``y + bias`` in
  ``form`` (one of :data:`BIAS_SUMS`); the same values either way."""
  return _BIAS_SUMS.block(form)


def default_bias_sums() -> str:
  """The innermost block's bias form ("reduce" outside any block)."""
  return _BIAS_SUMS.get()
