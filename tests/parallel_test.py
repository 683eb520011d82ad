"""Several devices, several processes, preemption and exact resume (the CLI, as users run it).

Each test runs `python -m experiments.mnist_rotated` on the smoke config in fresh processes,
because the device count and jax.distributed are fixed when jax starts.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DATA = {}


@pytest.fixture(autouse=True)
def _data_dir(mnist_dir):
  """Every test here trains on real digits: the folder comes from conftest's fixture."""
  _DATA["dir"] = mnist_dir


def _cmd(workdir, *overrides, config="experiments/configs/default.py:smoke"):
  return [sys.executable, "-m", "experiments.mnist_rotated", f"--config={config}",
          f"--workdir={workdir}", f"--config.data_dir={_DATA['dir']}", *overrides]


def _env(devices=1):
  env = dict(os.environ)
  # Kept: what conftest put in XLA_FLAGS (the tests' optimisation level).
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "")
                      + f" --xla_force_host_platform_device_count={devices}").strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _run(workdir, *overrides, devices=1, timeout=240):
  p = subprocess.run(_cmd(workdir, *overrides), cwd=ROOT, env=_env(devices), timeout=timeout,
                     capture_output=True, text=True)
  assert p.returncode == 0, p.stderr[-3000:]
  return p


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["loss"] for r in map(json.loads, f) if r["kind"] == "train"]


def _params(workdir, step=None):
  from experiments import checkpoints
  _, _, step, params = checkpoints.load_checkpoint(workdir, step)
  return step, jax.tree.leaves(params)


def test_four_devices_follow_the_one_device_trajectory(tmp_path):
  one, four = str(tmp_path / "one"), str(tmp_path / "four")
  _run(one, "--config.log_every_steps=1")
  p = _run(four, "--config.log_every_steps=1", devices=4)
  assert "4 device(s) in 1 process(es)" in p.stderr
  a, b = np.array(_losses(one)), np.array(_losses(four))
  assert len(a) == len(b) == 16
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  # Parameters: Adam divides by the gradient's running scale, so a parameter whose gradient
  # is near zero moves by up to the learning rate whichever way float rounding tips it; 4 and
  # 1 devices sum in different orders, so a few such parameters differ by up to ~1e-4 (6e-5
  # measured) after 16 steps, while the losses above agree to 1e-4.
  for x, y in zip(_params(one)[1], _params(four)[1]):
    np.testing.assert_allclose(x, y, rtol=1e-3, atol=2e-4)


def test_batch_that_does_not_divide_over_devices_is_refused(tmp_path):
  p = subprocess.run(_cmd(str(tmp_path), "--config.batch_size=62"), cwd=ROOT, env=_env(4),
                     capture_output=True, text=True, timeout=240)
  assert p.returncode == 2
  assert "config.batch_size = 62 does not divide over the 4 devices" in p.stderr


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_together_and_agree(tmp_path):
  single = str(tmp_path / "single")
  _run(single, "--config.log_every_steps=1", devices=2)
  shared = str(tmp_path / "shared")
  port = _free_port()
  procs = [subprocess.Popen(
      _cmd(shared, "--config.log_every_steps=1", f"--coordinator_address=localhost:{port}",
           "--num_processes=2", f"--process_id={i}"),
      cwd=ROOT, env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "2 device(s) in 2 process(es), training data in per-host shards" in outs[0][1]
  with open(os.path.join(shared, "results.json")) as f:
    results = json.load(f)
  assert results["processes"] == 2
  with open(os.path.join(shared, "metrics.jsonl")) as f:       # written once, by process 0
    assert sum(1 for r in map(json.loads, f) if r["kind"] == "eval") == 2
  np.testing.assert_allclose(_losses(shared), _losses(single), rtol=1e-4, atol=1e-5)


def _start_and_wait_for_checkpoint(workdir, *overrides, min_step=1):
  p = subprocess.Popen(_cmd(workdir, *overrides), cwd=ROOT, env=_env(1),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  ckpt = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline:
    steps = [int(d) for d in os.listdir(ckpt) if d.isdigit()] if os.path.isdir(ckpt) else []
    if steps and max(steps) >= min_step:
      return p
    assert p.poll() is None, p.communicate()[1][-3000:]
    time.sleep(0.02)
  p.kill()
  raise AssertionError("no checkpoint appeared")


# 48 steps of 8 per epoch: the kill comes at a checkpoint of step 16 or later, well before the end.
LONG = ("--config.num_epochs=6", "--config.checkpoint_every_steps=8",
        "--config.keep_checkpoints=3", "--config.eval_every_epochs=6")
TOTAL = 6 * 8


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  workdir = str(tmp_path)
  p = _start_and_wait_for_checkpoint(workdir, *LONG)
  p.send_signal(signal.SIGTERM)
  _, err = p.communicate(timeout=120)
  assert p.returncode == 0, err[-3000:]
  assert "SIGTERM received: saved a checkpoint at step" in err
  step = int(err.split("saved a checkpoint at step ")[1].split()[0])
  assert 8 <= step < TOTAL
  assert _params(workdir)[0] == step
  assert not os.path.exists(os.path.join(workdir, "results.json"))


def test_killed_run_resumes_bitwise_equal(tmp_path):
  straight = str(tmp_path / "straight")
  _run(straight, *LONG)
  killed = str(tmp_path / "killed")
  p = _start_and_wait_for_checkpoint(killed, *LONG, min_step=16)
  p.kill()                                  # SIGKILL: no handler, no final save
  p.communicate()
  step_at_kill, _ = _params(killed)
  assert step_at_kill < TOTAL
  out = _run(killed, *LONG)
  assert f"resumed from checkpoint at step {step_at_kill}" in out.stderr
  a_step, a = _params(straight)
  b_step, b = _params(killed)
  assert a_step == b_step == TOTAL
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)     # bitwise


def test_bad_cluster_flags_are_clear(tmp_path):
  """(Other bad flags and config fields: tests/faults_test.py.)"""
  p = subprocess.run(_cmd(str(tmp_path), "--coordinator_address=localhost:1"), cwd=ROOT,
                     env=_env(1), capture_output=True, text=True, timeout=120)
  assert p.returncode != 0 and "needs --num_processes" in p.stderr


_SLICES_OVER_DEVICES = """
import json, re
import jax, jax.numpy as jnp, optax
from flax.training import train_state
from eqnn import actions, models, readouts
from experiments import parallel, steps
model = models.EquivariantCNN(actions.rotations(), (4, 8), (2, 2), (16,))
x = jax.random.normal(jax.random.key(0), (16, 28, 28, 1))
y = jax.random.randint(jax.random.key(1), (16,), 0, 40)
state = train_state.TrainState.create(apply_fn=model.apply, tx=optax.sgd(0.1),
                                      params=model.init(jax.random.key(2), x[:1]))
mesh = parallel.mesh()
shard = parallel.batch_sharded(mesh)
out = {}
for apart in (False, True):
  step = lambda s, x, y, b: steps.update(s, x, y, 4, readouts.joint_logits, head_apart=apart,
                                         batch_sharding=b)
  one, _ = jax.jit(lambda s, x, y: step(s, x, y, None))(state, x, y)
  f = jax.jit(lambda s, x, y: step(s, x, y, shard))
  args = (parallel.put_tree(state, parallel.replicated(mesh)), parallel.put(x, shard),
          parallel.put(y, shard))
  hlo = f.lower(*args).compile().as_text()
  two, _ = f(*args)
  convs = re.findall(r"f32\\[(\\d+),14,14,\\d+\\]\\S* convolution", hlo)
  out[str(apart)] = {
      "batches": sorted({int(b) for b in convs}),
      "diff": max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
          jax.tree.leaves(one.params), jax.tree.leaves(two.params)))}
print(json.dumps(out))
"""


def test_each_micro_batch_is_spread_over_the_devices():
  """A batch of 16 sharded over 2 devices in 4 slices: each device's convs run on its 2
  images of each slice (not on the slice's 4, the whole slice on every device, as a
  contiguous reshape of the sharded batch compiled), with the head in every slice and apart,
  and the step is the one-device step."""
  p = subprocess.run([sys.executable, "-c", _SLICES_OVER_DEVICES], cwd=ROOT, env=_env(2),
                     capture_output=True, text=True, timeout=180)
  assert p.returncode == 0, p.stderr[-3000:]
  for apart, r in json.loads(p.stdout.strip().splitlines()[-1]).items():
    assert r["batches"] == [2], (apart, r)
    assert r["diff"] < 1e-6, (apart, r)


_LIFT_OVER_DEVICES = """
import json, re
import jax, jax.numpy as jnp
import eqnn
from eqnn import actions
from experiments import parallel
k1 = jax.random.normal(jax.random.key(1), (3, 3, 1, 8))
def f(x):                        # a plain conv net: proved to map each example on its own
  y = jax.lax.conv_general_dilated(x, k1, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.nn.relu(y).mean(axis=(1, 2))
x = jax.random.normal(jax.random.key(0), (16, 28, 28, 1))
shard = parallel.batch_sharded(parallel.mesh())
out = {}
for vectorize in ("auto", "batch"):
  lifted = jax.jit(eqnn.equivarify(f, actions.rotations_reflections(), vectorize=vectorize))
  hlo = lifted.lower(parallel.put(x, shard)).compile().as_text()
  y = lifted(parallel.put(x, shard))
  convs = re.findall(r"f32\\[(\\d+),28,28,8\\]\\S* convolution", hlo)
  out[vectorize] = {
      "batches": sorted({int(b) for b in convs}),
      "gathers": len(re.findall(r" all-gather\\(", hlo)),
      "spec": [None if a is None else str(a) for a in y.sharding.spec],
      "diff": float(jnp.max(jnp.abs(y - lifted(x))))}
from eqnn import models          # the lifted layers' copies of the image: the vmap forms
for name, kw in (("norm", {"norm": True}), ("vmap", {"impl": "vmap"})):
  model = models.EquivariantCNN(actions.rotations(), (4, 8), (2, 2), (16,), **kw)
  params = model.init(jax.random.key(1), x[:1])
  apply = jax.jit(model.apply)
  hlo = apply.lower(params, parallel.put(x, shard)).compile().as_text()
  y = apply(params, parallel.put(x, shard))
  out[name] = {"gathers": len(re.findall(r" all-gather\\(", hlo)),
               "spec": [None if a is None else str(a) for a in y.sharding.spec],
               "diff": float(jnp.max(jnp.abs(y - apply(params, x))))}
print(json.dumps(out))
"""


def test_the_lift_folded_into_the_batch_keeps_a_sharded_batch_sharded():
  """D4's 8 moved copies of a batch of 16 sharded over 2 devices, folded into F's batch
  ("auto" where F is proved per example, and "batch"): each device runs F on its 8 examples'
  64 copies, no gather of the batch, the output sharded by example and equal to the
  unsharded lift (the fold's rows once ran group-major, and XLA gathered the whole batch
  onto every device); the same for EquivariantCNN's layers that fold the copies."""
  p = subprocess.run([sys.executable, "-c", _LIFT_OVER_DEVICES], cwd=ROOT, env=_env(2),
                     capture_output=True, text=True, timeout=180)
  assert p.returncode == 0, p.stderr[-3000:]
  out = json.loads(p.stdout.strip().splitlines()[-1])
  for vectorize in ("auto", "batch"):
    r = out[vectorize]
    assert r["batches"] == [64] and r["gathers"] == 0, (vectorize, r)
    assert r["spec"] == [None, "data"] and r["diff"] < 1e-6, (vectorize, r)
  # The library's lifted layers where they turn the image's copies (the input lift before
  # batch norm, and every layer in the "vmap" form) fold them example first too.
  for name in ("norm", "vmap"):
    r = out[name]
    assert r["gathers"] == 0 and r["spec"] == ["data"] and r["diff"] < 1e-5, (name, r)
