"""Data parallelism with jax.sharding, the same code on 1 or N devices and on many hosts.

One mesh axis, "data", over every device of every process. Parameters and optimiser state
are replicated; each global batch is sharded over "data", so every device computes its
slice and XLA inserts the gradient all-reduce. With one process the training set is
replicated on its devices; with several, each process keeps only its contiguous block of
rows on its own devices (:func:`put_host_shards`) and XLA gathers each global batch across
hosts. Either way the training set is one global array in the original row order and each
step gathers the same global batch by index, so 1 and N devices, 1 and N processes, follow
the same trajectory up to float summation order.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

# Environment variables that mean "this process is one of several" on the clusters jax
# detects by itself (Slurm, Open MPI, Cloud TPU) or that a launcher sets for jax.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               mode: str = "auto") -> bool:
  """Calls ``jax.distributed.initialize`` when asked to or when the environment says so.

  Args:
    coordinator_address: ``host:port`` of process 0; with num_processes and process_id
      this starts a cluster anywhere (two processes on one machine included).
    num_processes, process_id: this process's place in the cluster.
    mode: "auto" (initialise if an address was given or a cluster environment is detected),
      "on" (always; jax detects the rest), "off" (never).

  Returns:
    Whether the distributed system was initialised.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"--distributed={mode!r}: choose auto, on or off")
  explicit = bool(coordinator_address)
  if explicit and (num_processes < 1 or not 0 <= process_id < num_processes):
    raise ValueError(f"--coordinator_address needs --num_processes >= 1 and 0 <= --process_id "
                     f"< num_processes, got {num_processes} and {process_id}")
  detected = any(os.environ.get(k) for k in _CLUSTER_ENV)
  if os.environ.get("SLURM_NTASKS") == "1":
    detected = any(os.environ.get(k) for k in _CLUSTER_ENV if k != "SLURM_NTASKS")
  if mode == "off" or (mode == "auto" and not explicit and not detected):
    return False
  if explicit:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  else:
    jax.distributed.initialize()
  return True


def mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(m: Mesh) -> NamedSharding:
  return NamedSharding(m, P())


def batch_sharded(m: Mesh) -> NamedSharding:
  return NamedSharding(m, P("data"))


def check_batch(batch_size: int, m: Mesh, what: str = "config.batch_size") -> None:
  n = m.devices.size
  if batch_size % n:
    raise ValueError(f"{what} = {batch_size} does not divide over the {n} devices; use a "
                     f"multiple of {n}")


def put(value, sharding: NamedSharding):
  """A global array from a host value that every process holds in full."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def put_host_shards(value, m: Mesh):
  """A dataset sharded over "data" from the rows this process keeps: process p holds the
  contiguous block p of ``value`` (a global array in the original row order, so batches
  gathered from it by global index are the same for any process count). Every process
  passes the full ``value``; only its own block is kept and placed on its devices."""
  value = np.asarray(value)
  p, count = jax.process_index(), jax.process_count()
  n = value.shape[0]
  if n % m.devices.size:
    raise ValueError(f"{n} training examples do not divide over {m.devices.size} devices; "
                     f"use config.max_train_examples to trim them")
  block = n // count
  local = value[p * block:(p + 1) * block]
  return jax.make_array_from_process_local_data(batch_sharded(m), local, value.shape)


def put_tree(tree, sharding: NamedSharding):
  """Every leaf of ``tree`` (identical on every process) as a global array."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda x: put(np.asarray(x), sharding), tree)


def fetch(x) -> np.ndarray:
  """A global array's full value on every host."""
  if jax.process_count() == 1 or x.is_fully_addressable:
    return np.asarray(x)
  if x.sharding.is_fully_replicated:
    return np.asarray(x.addressable_data(0))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def is_main() -> bool:
  return jax.process_index() == 0
