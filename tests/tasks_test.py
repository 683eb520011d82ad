"""The task registry: sizes come from the data, the configs build the networks they say."""

import jax
import jax.numpy as jnp
import pytest

from eqnn import data, testing
from experiments import tasks
from experiments.configs import default, paper, point_sets


def test_sizes_come_from_the_dataset_entry():
  assert tasks.data_spec(default.get_config()) == tasks.DataSpec((28, 28, 1), 10)
  c = point_sets.get_config()
  spec = tasks.data_spec(c)
  ds = data.point_sets(0, n_train=8, n_test=8, n_points=tasks.POINTS_PER_SET)
  assert spec.input_shape == ds.train.inputs.shape[1:] and spec.num_classes == ds.num_classes
  assert tasks.build_task(c).num_classes == ds.num_classes


def test_paper_config_matches_the_authors_network():
  task = tasks.build_task(paper.get_config())
  # Shapes only (traced, not run: the full-width network eagerly took 28 s of the suite);
  # tests below run it and check its equivariance.
  params = jax.eval_shape(task.model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))["params"]
  shapes = {k: jax.tree.map(lambda a: a.shape, v) for k, v in params.items()}
  assert shapes["LiftConv_0"]["conv"]["kernel"] == (3, 3, 1, 80)
  assert shapes["GroupConv_0"]["conv"]["kernel"] == (3, 3, 320, 80)
  assert shapes["GroupConv_1"]["conv"]["kernel"] == (3, 3, 320, 32)
  assert shapes["GroupDense_0"]["kernel"] == (7 * 7 * 128, 1024)
  assert shapes["Dense_0"]["kernel"] == (1024, 10)
  out = jax.eval_shape(task.model.apply, {"params": params}, jnp.zeros((2, 28, 28, 1)))
  assert out.shape == (2, 4, 10)


@pytest.mark.parametrize("cfg", [default.get_config(), default.get_config("stacked"),
                                 paper.get_config()], ids=["default", "stacked", "paper"])
def test_models_are_equivariant_on_real_test_images(cfg, mnist_dir):
  ds = data.load_mnist(mnist_dir)
  task = tasks.build_task(cfg)
  x = jnp.asarray(data.to_float(ds.test.inputs[:4 if cfg.conv_features[0] < 50 else 2]))
  bound = task.model.bind(jax.jit(task.model.init)(jax.random.key(0), x[:1]))
  err = testing.assert_equivariant(jax.jit(bound.__call__), *testing.declared_actions(bound), x)
  assert err.max_rel < 1e-5


def test_any_cyclic_or_dihedral_order_is_a_config_group():
  """C<n> and D<n> beyond the named groups: resampled (approximate) turns of that order."""
  c = default.get_config()
  for name, order in (("C12", 12), ("C3", 3), ("D6", 12)):
    c.group = name
    action = tasks.group_action(c)
    assert action.group.order == order and action.approximate
    assert tasks.known_group(name)
  for bad in ("C0", "C", "D-2", "C08", "c4"):
    assert not tasks.known_group(bad)
