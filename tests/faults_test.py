"""Bad input and faults, as users meet them: the CLI in fresh processes, one smoke run shared.

Every case ends in one line on stderr that names the problem (exit 2), or in correct
behaviour, and nothing a previous run wrote is lost.
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = "experiments/configs/default.py:smoke"


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _cmd(workdir, *args, config=SMOKE, data_dir=None, module="experiments.mnist_rotated"):
  cmd = [sys.executable, "-m", module, f"--workdir={workdir}"]
  if module == "experiments.mnist_rotated":
    cmd += [f"--config={config}"] + ([f"--config.data_dir={data_dir}"] if data_dir else [])
  return cmd + list(args)


def _run(*args, **kw):
  return subprocess.run(_cmd(*args, **kw), cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=300)


def _one_line_error(p, *fragments, status=2):
  """Exit ``status``, no traceback, and the last stderr line an ``error:`` naming the problem."""
  assert p.returncode == status, (p.returncode, p.stderr[-2000:])
  assert "Traceback" not in p.stderr, p.stderr[-3000:]
  last = p.stderr.strip().splitlines()[-1]
  assert last.startswith("error: "), p.stderr[-2000:]
  for f in fragments:
    assert f in last, (f, last)
  return last


def _snapshot(workdir):
  """Every file of a workdir, for "nothing was touched" comparisons."""
  out = {}
  for root, _, names in os.walk(workdir):
    for n in names:
      if n != ".lock":
        path = os.path.join(root, n)
        with open(path, "rb") as f:
          out[os.path.relpath(path, workdir)] = f.read()
  return out


def _steps(workdir):
  ckpt = os.path.join(workdir, "checkpoints")
  return sorted(int(d) for d in os.listdir(ckpt) if d.isdigit())


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist_dir):
  """One finished smoke run (checkpoints 8 and 16); tests copy it before changing anything."""
  w = str(tmp_path_factory.mktemp("finished") / "w")
  p = _run(w, data_dir=mnist_dir)
  assert p.returncode == 0, p.stderr[-3000:]
  assert _steps(w) == [8, 16]
  # A quiet, informative run: what was loaded and from where, the devices, where outputs go;
  # no INFO noise (JAX's probe for a TPU library, optax, orbax).
  assert f"data: mnist from the IDX files in {mnist_dir} (sha256 verified)" in p.stderr
  assert "devices: cpu:0" in p.stderr and f"writing to {w}: metrics.jsonl" in p.stderr
  assert "Unable to initialize backend" not in p.stderr and "I1" not in p.stderr
  return w


@pytest.fixture
def copy(finished, tmp_path):
  w = str(tmp_path / "w")
  shutil.copytree(finished, w)
  return w


def test_rerun_with_another_architecture_or_group_is_refused_and_touches_nothing(copy, mnist_dir):
  before = _snapshot(copy)
  p = _run(copy, "--config.conv_features=(8,16)", "--config.num_epochs=4", data_dir=mnist_dir)
  _one_line_error(p, "another configuration", "conv_features: [4, 8] -> [8, 16]", "--fresh")
  p = _run(copy, "--config.group=D4", data_dir=mnist_dir)
  _one_line_error(p, "group: 'C4' -> 'D4'")
  assert _snapshot(copy) == before
  # Asked for, the new run starts and the old one is kept aside whole.
  p = _run(copy, "--config.conv_features=(8,16)", "--fresh", data_dir=mnist_dir)
  assert p.returncode == 0, p.stderr[-2000:]
  aside = [d for d in os.listdir(os.path.dirname(copy)) if d.startswith("w.previous-")]
  assert len(aside) == 1 and "moved to" in p.stderr
  assert _snapshot(os.path.join(os.path.dirname(copy), aside[0])) == before


def test_a_rerun_that_fails_on_its_data_changes_nothing(copy, tmp_path):
  before = _snapshot(copy)
  p = _run(copy, data_dir=str(tmp_path / "nowhere"))
  _one_line_error(p, "train-images-idx3-ubyte.gz is missing")
  assert _snapshot(copy) == before


def test_a_finished_run_is_left_as_it_is(copy, mnist_dir):
  before = _snapshot(copy)
  p = _run(copy, data_dir=mnist_dir)
  assert p.returncode == 0 and "is complete (step 16)" in p.stderr
  assert _snapshot(copy) == before


def _flip_bytes(step_dir):
  """Flips bytes in the largest data file of a checkpoint step (the array payload)."""
  files = [os.path.join(r, n) for r, _, ns in os.walk(step_dir) for n in ns
           if "manifest" not in n]
  target = max(files, key=os.path.getsize)
  raw = bytearray(open(target, "rb").read())
  for i in range(len(raw) // 2, len(raw) // 2 + 16):
    raw[i] ^= 0xFF
  open(target, "wb").write(bytes(raw))


def test_damaged_latest_checkpoint_is_set_aside_and_the_one_before_used(copy, mnist_dir):
  _flip_bytes(os.path.join(copy, "checkpoints", "16"))
  p = _run(copy, "--config.num_epochs=3", data_dir=mnist_dir)
  assert p.returncode == 0, p.stderr[-2000:]
  assert "checkpoint at step 16 is damaged (1 file(s) differ from their sha256" in p.stderr
  assert "resumed from checkpoint at step 8" in p.stderr      # not "unreadable" too
  assert os.path.isdir(os.path.join(copy, "checkpoints.damaged", "16"))   # kept, not deleted
  assert _steps(copy) == [16, 24]                                          # saved again


def test_an_empty_latest_step_does_not_block_export(copy):
  shutil.rmtree(os.path.join(copy, "checkpoints", "16"))
  os.makedirs(os.path.join(copy, "checkpoints", "16"))
  p = _run(copy, module="experiments.export")
  assert p.returncode == 0, p.stderr[-2000:]
  assert "step 16 is damaged" in p.stderr and os.path.exists(os.path.join(copy, "model.jax"))


def test_a_diverging_run_stops_keeps_no_nan_and_says_how_to_continue(tmp_path, mnist_dir):
  w = str(tmp_path / "w")
  p = _run(w, "--config.learning_rate=1e9", "--config.log_every_steps=1", data_dir=mnist_dir)
  last = _one_line_error(p, "training diverged", "no results were written",
                         "--config.learning_rate=1e+08", status=3)
  assert not os.path.exists(os.path.join(w, "results.json"))
  assert "between step" in last
  # Export has nothing good to serve: one line, no NaN model.
  p = _run(w, module="experiments.export")
  _one_line_error(p)
  assert not os.path.exists(os.path.join(w, "model.jax"))


def test_a_second_run_in_a_workdir_in_use_is_refused(copy, mnist_dir):
  with open(os.path.join(copy, ".lock"), "a+") as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)     # as a live run holds it
    p = _run(copy, data_dir=mnist_dir)
    _one_line_error(p, "is in use by a run that is still going")
  # Released (as when its process dies): the lock file left behind does not block.
  p = _run(copy, data_dir=mnist_dir)
  assert p.returncode == 0, p.stderr[-2000:]


def test_sigint_saves_a_checkpoint_and_exits_cleanly(tmp_path, mnist_dir):
  w = str(tmp_path / "w")
  args = ("--config.num_epochs=2", "--config.log_every_steps=1",
          "--config.max_train_examples=4096")                    # 64 steps an epoch
  proc = subprocess.Popen(_cmd(w, *args, data_dir=mnist_dir), cwd=ROOT, env=_env(),
                          stderr=subprocess.PIPE, text=True)
  metrics, deadline = os.path.join(w, "metrics.jsonl"), time.time() + 240
  while time.time() < deadline and not (
      os.path.exists(metrics) and open(metrics).read().count('"train"') >= 6):
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  err = proc.communicate(timeout=120)[1]
  assert proc.returncode == 0, err[-2000:]
  assert "SIGINT received: saved a checkpoint at step" in err and "Traceback" not in err
  stopped = _steps(w)[-1]
  assert 6 <= stopped < 128
  # The same command resumes; TensorBoard's curve goes on from there, with no second curve
  # from step 0 and no step logged twice (tensorboard/ holds one event file per session).
  p = _run(w, *args, data_dir=mnist_dir)
  assert p.returncode == 0 and f"resumed from checkpoint at step {stopped}" in p.stderr
  # results.json's wall time is the second process's; the run's total counts both.
  with open(os.path.join(w, "results.json")) as f:
    results = json.load(f)
  assert results["segments"] == 2
  assert results["wall_time_total_s"] > results["wall_time_s"] + 1.0
  from experiments import logs
  events = os.listdir(os.path.join(w, "tensorboard"))
  scalars = logs.read_scalars(os.path.join(w, "tensorboard"))
  assert len(events) == 2
  assert [step for step, _ in scalars["train/loss"]] == list(range(1, 129))
  assert [step for step, _ in scalars["eval/test_joint_accuracy"]] == [64, 128]
  assert {"train/learning_rate", "train/images_per_s", "eval/test_class_accuracy"} <= set(scalars)


@pytest.mark.parametrize("args, fragments", [
    (["--config.foo=1"], ["bad --config override", "foo"]),
    (["--config.pools=(0,-1)"], ["config.pools = (0, -1)"]),
    (["--config.keep_checkpoints=0"], ["config.keep_checkpoints = 0"]),
    (["--config.impl=fourier"], ["not available for lift_conv"]),
    (["--nosuchflag"], ["nosuchflag"]),
], ids=["unknown-field", "pools", "keep-0", "impl", "unknown-flag"])
def test_bad_flags_and_config_fields_are_one_line(tmp_path, args, fragments, mnist_dir):
  p = _run(str(tmp_path / "w"), *args, data_dir=mnist_dir)
  _one_line_error(p, *fragments)
  assert not os.path.exists(tmp_path / "w" / "config.json")


def test_bad_paths_are_one_line(tmp_path, mnist_dir):
  a_file = tmp_path / "a_file"
  a_file.write_text("not a folder")
  bad_config = tmp_path / "bad_config.py"
  bad_config.write_text("def get_config(:\n")
  cases = [
      (_cmd(str(tmp_path / "w"), config=str(tmp_path / "nope.py")), ["No such file"]),
      (_cmd(str(tmp_path / "w"), config=str(bad_config)), ["does not load", "SyntaxError"]),
      (_cmd(str(tmp_path / "w"), config=SMOKE + "x"), ["unknown variant 'smokex'"]),
      (_cmd(str(a_file), data_dir=mnist_dir), ["is a file, not a folder"]),
      (_cmd(str(a_file / "sub"), data_dir=mnist_dir), ["cannot be created"]),
      (_cmd(str(tmp_path / "none"), module="experiments.export"), ["is not a folder"]),
      (_cmd(str(tmp_path), module="experiments.export"), ["no config.json"]),
  ]
  procs = [subprocess.Popen(c, cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
           for c, _ in cases]                    # independent: run them side by side
  for proc, (_, fragments) in zip(procs, cases):
    _, err = proc.communicate(timeout=300)
    _one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", err), *fragments)


def test_a_damaged_config_json_is_one_line(copy, mnist_dir):
  with open(os.path.join(copy, "config.json"), "w") as f:
    f.write("{not json")
  _one_line_error(_run(copy, data_dir=mnist_dir), "config.json is damaged")
  _one_line_error(_run(copy, module="experiments.export"), "config.json is damaged")


# --- the library -------------------------------------------------------------------------

def test_out_of_range_group_elements_are_refused_or_checked():
  import jax
  import jax.numpy as jnp
  from eqnn import actions
  act = actions.rotations_reflections()
  x = jnp.arange(16.0).reshape(4, 4, 1)
  for g in (jnp.array(8), jnp.array(-1), np.int64(9), 8):
    with pytest.raises(ValueError, match="out of range for D4"):
      act(g, x)
  with pytest.raises(TypeError, match="one integer index"):
    act(jnp.array([1, 2]), x)
  # Traced: without the checked mode the result is NaN, never another element's image ...
  with jax.debug_nans(False):       # conftest turns NaN checks on; here NaN is the point
    assert bool(jnp.all(jnp.isnan(jax.jit(lambda g: act(g, x))(8))))
    # ... and with it, an error.
    err, _ = jax.jit(actions.checked(lambda g: act(g, x)))(8)
  assert "out of bounds" in err.get()
  err, y = jax.jit(actions.checked(lambda g: act(g, x)))(3)
  assert err.get() is None and bool(jnp.all(y == act(3, x)))


def test_integer_images_are_refused_by_the_models():
  import jax
  import jax.numpy as jnp
  from eqnn import actions, models
  x = jnp.zeros((1, 8, 8, 1), jnp.uint8)
  for model in (models.EquivariantCNN(actions.rotations(), (2,), (2,), (4,)),
                models.PlainCNN((2,), (2,), (4,))):
    with pytest.raises(TypeError, match="scale raw uint8 images"):
      model.init(jax.random.key(0), x)

