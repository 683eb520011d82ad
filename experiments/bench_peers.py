r"""`make bench-peers`: eqnn against escnn (PyTorch), the same networks, alternated in one run.

    make bench-peers      # builds .venv-peers (PyTorch CPU, escnn), then runs this
    python -m experiments.bench_peers --peers_python=.venv-peers/bin/python [--nets=paper_v1,default]

For each network (the authors' V1 and eqnn's default, both over C4; escnn's version is in
`experiments/peers/escnn_worker.py`), one Adam train step at the same batch on each side, the
sides alternated round by round: eqnn's step in this process, escnn's in a worker process in
its own environment (escnn needs numpy < 2), which waits on its pipe while eqnn runs. Reported:
images/s each, their ratio, and each side's executed GFLOP/s against this run's float32 matmul
peak through JAX: eqnn executes the forms `impl="auto"` picks (the Fourier form for C4's group
convs), escnn convolves with dense expanded filters. eqnn's count takes each Fourier unit as a
direct conv; on CPU the wide 3x3 ones (V1's) run in Winograd's form, 2.25x fewer multiplies, so
its figure there is conv-equivalent (the table says so). eqnn's step is the runner's, in the
form the network's config asks for (micro-batches included).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

from experiments.bench_tables import gflops_cell
from experiments.timing import FUSION_NOTES

FLAGS = flags.FLAGS


class Worker:
  """The escnn worker process: one JSON request per line, one JSON reply per line."""

  def __init__(self, python: str):
    if not os.path.exists(python):
      raise SystemExit(f"error: no Python at {python}: `make bench-peers` builds the peers' "
                       f"environment (.venv-peers) first")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "escnn_worker.py")
    self.proc = subprocess.Popen([python, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, bufsize=1)

  def ask(self, **req):
    self.proc.stdin.write(json.dumps(req) + "\n")
    self.proc.stdin.flush()
    line = self.proc.stdout.readline()
    if not line:
      raise SystemExit(f"error: the escnn worker stopped (exit {self.proc.wait()}) on {req}")
    reply = json.loads(line)
    if "error" in reply:
      raise SystemExit(f"error: escnn worker: {reply['error']}")
    return reply

  def close(self):
    self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
    self.proc.stdin.close()
    self.proc.wait(timeout=30)


# The networks escnn's worker builds (experiments/peers/escnn_worker.py): "default" is the
# paper's stacking, 16-32-64 (make train's network until 2026-12-02).
PEER_NETS = ("paper_v1", "default")


def main(argv):
  del argv
  from experiments import bench_steps, logs, timing
  logs.quiet()
  import jax
  unknown = [n for n in FLAGS.nets if n not in PEER_NETS]
  if unknown:
    raise app.UsageError(f"--nets: {', '.join(unknown)} unknown; choose among {PEER_NETS}")
  t0 = time.time()
  worker = Worker(FLAGS.peers_python)
  info = worker.ask(cmd="info")
  peak = timing.matmul_peak(3)
  print(f"float32 matmul peak through JAX: {peak / 1e9:.0f} GFLOP/s; escnn {info['escnn']} on "
        f"torch {info['torch']} ({info['threads']} threads), jax {jax.__version__}", flush=True)
  from experiments import host_memory
  # Both sides run with what this process has (the escnn worker inherits its environment).
  report = {"machine": {"cpus": os.cpu_count(), "jax": jax.__version__, **info,
                        "huge_pages": host_memory.status()},
            "matmul_peak_gflops": peak / 1e9, "batch": FLAGS.batch, "rows": []}
  b = FLAGS.batch
  nets = bench_steps.networks()
  for net in FLAGS.nets:
    c = nets[net]
    cfg, model = c.cfg, c.model()
    if c.microbatches:
      micro = c.microbatches if b % c.microbatches == 0 else 1
    else:                 # the runner measures the slice count: so does the bench, at its batch
      micro, tried = timing.fastest_microbatches(model, b, 40, c.head_apart)
      print(f"  {net}: micro-batches measured as the runner does: {micro} ("
            + ", ".join(f"{m}: {b / t:.1f} img/s" for m, t in tried.items()) + ")", flush=True)
    # Its conv forms and XLA CPU fusions likewise.
    model, fusions, (eqnn_step, _, _) = c.runner_step(b, micro, net)
    built = worker.ask(cmd="build", net=net, batch=b)
    timing.ready(eqnn_step())                                   # compile, first touch
    ours, theirs = [], []
    for _ in range(FLAGS.rounds):
      for _ in range(FLAGS.steps_per_round):
        t = time.perf_counter()
        timing.ready(eqnn_step())
        ours.append(time.perf_counter() - t)
      theirs += worker.ask(cmd="time", steps=FLAGS.steps_per_round)["seconds"]
    t_ours, t_theirs = statistics.median(ours), statistics.median(theirs)
    macs_ours = timing.conv_macs(cfg, True, executed=True, conv_form=model.conv_form)
    macs_dense = timing.conv_macs(cfg, False)
    macs_equivalent = timing.conv_macs(cfg, True)
    row = {"net": net, "batch": b, "eqnn_microbatches": micro, "eqnn_cpu_fusions": fusions,
           "eqnn_images_per_s": b / t_ours, "escnn_images_per_s": b / t_theirs,
           "ratio": t_theirs / t_ours,
           "eqnn_gflops": 6 * macs_ours * b / t_ours / 1e9,
           "eqnn_conv_equivalent_gflops": 6 * macs_equivalent * b / t_ours / 1e9,
           "escnn_gflops": 6 * macs_dense * b / t_theirs / 1e9,
           "escnn_parameters": built["parameters"]}
    report["rows"].append(row)
    print(f"  {net:9s} batch {b}: eqnn {row['eqnn_images_per_s']:7.1f} img/s "
          f"({row['eqnn_gflops']:.0f} GFLOP/s executed, {100 * row['eqnn_gflops'] * 1e9 / peak:.0f}% "
          f"of peak{f', {micro} micro-batches' if micro > 1 else ''}), escnn "
          f"{row['escnn_images_per_s']:7.1f} img/s ({row['escnn_gflops']:.0f} GFLOP/s, "
          f"{100 * row['escnn_gflops'] * 1e9 / peak:.0f}%): eqnn/escnn = {row['ratio']:.2f}x",
          flush=True)
  worker.close()
  report["wall_s"] = time.time() - t0
  md = timing.write_report(FLAGS.out, report, markdown(report))
  print(f"wrote {FLAGS.out} and {md} in {report['wall_s']:.0f} s", file=sys.stderr)


def markdown(report) -> str:
  peak = report["matmul_peak_gflops"]
  m = report["machine"]
  out = [f"float32 matmul peak through JAX, same run: **{peak:.0f} GFLOP/s** ({m['cpus']} CPUs; "
         f"jax {m['jax']}; escnn {m['escnn']} on torch {m['torch']}, {m['threads']} threads; huge "
         f"pages for malloc, both sides: {m.get('huge_pages', 'not recorded')}).", "",
         "| network | batch | eqnn img/s | escnn img/s | eqnn / escnn | eqnn executed GFLOP/s "
         "(% of peak) | eqnn conv-equivalent GFLOP/s (% of peak) | escnn executed GFLOP/s "
         "(% of peak) |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in report["rows"]:
    mb = f" ({r['eqnn_microbatches']} x {r['batch'] // r['eqnn_microbatches']})" \
        if r["eqnn_microbatches"] > 1 else ""
    mb += FUSION_NOTES.get(r.get("eqnn_cpu_fusions"), "")
    cells = [gflops_cell(r, key, peak)
             for key in ("eqnn_gflops", "eqnn_conv_equivalent_gflops", "escnn_gflops")]
    out.append(f"| {r['net']} | {r['batch']}{mb} | {r['eqnn_images_per_s']:.1f} | "
               f"{r['escnn_images_per_s']:.1f} | {r['ratio']:.2f}x | " + " | ".join(cells) + " |")
  out += ["", "eqnn's executed GFLOP/s count each Fourier unit's multiply-adds, a 3x3 conv in "
          "Winograd's form (where the config's `conv_form` takes it: with \"auto\", on CPU, "
          "the convs of at least `eqnn.spatial.WINOGRAD_MIN_IN` in and `WINOGRAD_MIN_OUT` out "
          "channels) at its 16 products per 2 x 2 output tile; conv-equivalent counts every "
          "conv as a direct conv, as escnn's are. eqnn's step is built and compiled as its "
          "config says (its conv forms and XLA CPU fusions: \"no YNNPACK\", \"YNNPACK dots "
          "only\"; \"auto\" measured first, as the runner does)."]
  return "\n".join(out) + "\n"


def _define_flags():
  """The command's flags, defined only when it runs as a program (importing this module, as
  tests do beside other benchmarks, defines none)."""
  flags.DEFINE_string("peers_python", ".venv-peers/bin/python",
                      "The Python of the environment with torch and escnn.")
  flags.DEFINE_list("nets", list(PEER_NETS), f"Networks: {', '.join(PEER_NETS)}.")
  flags.DEFINE_integer("batch", 128, "Batch size of both sides' train steps.")
  flags.DEFINE_integer("rounds", 5, "Rounds; each times both sides.")
  flags.DEFINE_integer("steps_per_round", 2, "Train steps per side per round.")
  flags.DEFINE_string("out", "runs/bench_peers/peers.json", "Where to write the results.")


if __name__ == "__main__":
  from experiments import host_memory
  host_memory.reexec_with_huge_pages()
  _define_flags()
  app.run(main)
