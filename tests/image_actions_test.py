"""Turns of the pixel grid: exact where they are permutations, measured where they resample."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eqnn import actions, models, ops, testing


def _digit_like(seed=0, size=28):
  """A smooth, disk-masked test image (low frequencies, like a digit's strokes)."""
  x = jax.random.normal(jax.random.key(seed), (size // 4, size // 4, 1))
  x = jax.image.resize(x, (size, size, 1), "bilinear")
  return x * actions.disk_mask(size, size)[..., None]


@pytest.mark.parametrize("n,interpolation", [(8, "bilinear"), (16, "bilinear"), (8, "bicubic"),
                                             (16, "bicubic")])
def test_quarter_turns_inside_cn_are_exact_bit_for_bit(n, interpolation):
  act = actions.rotations(n, interpolation)
  assert act.approximate and not actions.rotations(4).approximate
  x = _digit_like()
  quarter = n // 4
  np.testing.assert_array_equal(act(quarter, x), jnp.rot90(x, 1, axes=(0, 1)))
  for k in range(n - quarter):              # turning by theta + 90 = rot90 of turning by theta
    np.testing.assert_array_equal(act(k + quarter, x), jnp.rot90(act(k, x), 1, axes=(0, 1)))
  np.testing.assert_array_equal(act(0, x), x)   # e acts trivially on a masked image


def test_resampled_turns_report_their_error_instead_of_failing():
  x = _digit_like(1)
  for act in (actions.rotations(8), actions.rotations(16), actions.rotations_reflections(8)):
    err = actions.check_action_axioms(act, x)            # measured, not judged
    assert 0 < err < 0.5 * float(jnp.max(jnp.abs(x)))
    with pytest.raises(AssertionError, match="not a left action"):
      actions.check_action_axioms(act, x, atol=1e-6)
  # The exact actions stay exact: error 0.
  assert actions.check_action_axioms(actions.rotations(), x) == 0.0


def test_a_c8_network_is_exact_on_quarter_turns_and_measured_elsewhere():
  act = actions.rotations(8)
  model = models.EquivariantCNN(act, (4, 6), (2, 2), (8,))
  x = jnp.stack([_digit_like(s) for s in range(3)])
  bound = model.bind(jax.jit(model.init)(jax.random.key(0), x[:1]))
  quarters = testing.assert_equivariant(bound, x, elements=[0, 2, 4, 6], atol=1e-5)
  eighth = testing.equivariance_error(bound, x, elements=[1, 3, 5, 7])
  assert quarters.max_rel < 1e-5 < eighth.max_rel          # approximate off the grid's symmetry
  readout = jax.jit(lambda x: ops.group_pool(bound(x)))
  assert testing.invariance_error(readout, act, x, elements=[2, 4, 6]).max_rel < 1e-5


def test_bicubic_is_measurably_closer_to_a_group_action_than_bilinear():
  x = _digit_like(2)
  errors = {}
  for interp in actions.INTERPOLATIONS:
    act = actions.rotations(8, interp)
    orbit = act.orbit(x)
    # (r r^3).x against r.(r^3.x): two resamplings against one, relative L2.
    errors[interp] = float(jnp.linalg.norm(act(1, orbit[3]) - orbit[4]) / jnp.linalg.norm(x))
  assert 0 < errors["bicubic"] < 0.7 * errors["bilinear"], errors


def test_turn_images_agrees_with_the_group_action_and_the_augmentation():
  x = np.stack([np.asarray(_digit_like(s)) for s in range(3)])
  for interp in actions.INTERPOLATIONS:
    act = actions.rotations(16, interp)
    for k in (1, 3, 6):
      np.testing.assert_allclose(actions.turn_images(x, np.full(3, 2 * np.pi * k / 16), interp),
                                 act(k, jnp.asarray(x)), rtol=1e-5, atol=1e-5)
  angles = np.array([0.3, 2.0, 5.5], np.float32)      # bilinear, like ops.rotate's augmentation
  np.testing.assert_allclose(actions.turn_images(x, angles),
                             ops.rotate(jnp.asarray(x), jnp.asarray(angles)), atol=2e-5)
  with pytest.raises(ValueError, match="square"):
    actions.turn_images(np.zeros((1, 8, 6, 1)), [0.1])
  with pytest.raises(ValueError, match="interpolation 'nearest'"):
    actions.rotations(8, "nearest")


def test_bad_inputs_for_resampling_are_named():
  with pytest.raises(ValueError, match="square images"):
    actions.rotations(8)(1, jnp.zeros((8, 6, 1)))
  with pytest.raises(ValueError, match="floating-point"):
    actions.rotations(8)(1, jnp.zeros((8, 8, 1), jnp.uint8))
  with pytest.raises(ValueError, match="order >= 1"):
    actions.rotations(0)


def test_a_known_element_turns_by_rot90_and_flip_the_same_as_its_gather():
  # Static g: jnp.rot90 / jnp.flip where the table is a turn or mirror of the grid (no
  # gather: its gradient is a scatter); the gather otherwise (torus shifts). The same values.
  y = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  for act, isometries in ((actions.rotations(), True), (actions.rotations_reflections(), True),
                          (actions.translations(6, 6, 3), False)):
    for g in range(act.group.order):
      np.testing.assert_array_equal(act.apply(g, y), act.apply(jnp.int32(g), y))
      text = jax.jit(lambda y, g=g: act.apply(g, y)).lower(y).as_text()
      assert ("gather" not in text) == (isometries or g == 0), (act.what, g)
