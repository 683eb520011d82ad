"""The escnn side of `make bench-peers`, run in its own environment (PyTorch CPU, escnn).

It imports neither JAX nor eqnn (escnn needs numpy < 2, eqnn's JAX needs numpy >= 2): the driver
(`experiments/bench_peers.py`) starts it as a subprocess and talks to it one line of JSON at a
time on stdin/stdout, so that the two libraries' train steps alternate round by round in one
run while the idle side waits on its pipe.

Requests:
  {"cmd": "build", "net": "paper_v1" | "default", "batch": B}  -> {"parameters": P, "build_s": S}
  {"cmd": "time", "steps": K}   -> {"seconds": [t_1, ..., t_K]}   (one Adam train step each)
  {"cmd": "info"}               -> versions and thread count
  {"cmd": "quit"}

The networks are the eqnn networks' tensor sizes in escnn's terms: regular fields of C4 acting
on the plane (P4), the input lift as an R2Conv from one trivial field, the lifted dense head as
an R2Conv whose kernel covers the whole last map, and |G| x 10 output channels.
"""

import json
import sys
import time


def build(net: str, batch: int):
  import torch
  from escnn import gspaces
  from escnn import nn as enn
  gs = gspaces.rot2dOnR2(N=4)
  reg = lambda c: enn.FieldType(gs, c * [gs.regular_repr])
  if net == "paper_v1":        # experiments/configs/paper.py
    convs, pools, dense = (80, 80, 32), (1, 1, 4), 1024
  elif net == "default":       # experiments/configs/default.py
    convs, pools, dense = (16, 32, 64), (2, 2, 2), 128
  else:
    raise ValueError(f"unknown network {net!r}")
  t = enn.FieldType(gs, [gs.trivial_repr])
  layers, size = [], 28
  for c, p in zip(convs, pools):
    layers += [enn.R2Conv(t, reg(c), 3, padding=1), enn.ReLU(reg(c), inplace=True)]
    t = reg(c)
    if p > 1:
      layers.append(enn.PointwiseMaxPool2D(t, p, stride=p))
      size //= p
  layers += [enn.R2Conv(t, reg(dense), size, padding=0), enn.ReLU(reg(dense), inplace=True),
             enn.R2Conv(reg(dense), reg(10), 1)]
  model = enn.SequentialModule(*layers)
  model.train()
  opt = torch.optim.Adam(model.parameters(), lr=1e-4)
  x = torch.randn(batch, 1, 28, 28)
  y = torch.zeros(batch, dtype=torch.long)
  in_type = enn.FieldType(gs, [gs.trivial_repr])
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    out = model(enn.GeometricTensor(x, in_type)).tensor.reshape(batch, -1)   # [B, 40]
    loss = loss_fn(out, y)
    loss.backward()
    opt.step()
    return float(loss.detach())

  params = sum(p.numel() for p in model.parameters())
  return step, params


def main():
  import torch
  step = None
  for line in sys.stdin:
    req = json.loads(line)
    if req["cmd"] == "build":
      t = time.perf_counter()
      step, params = build(req["net"], req["batch"])
      step()                                   # first call: filter bases, allocations
      reply = {"parameters": params, "build_s": time.perf_counter() - t}
    elif req["cmd"] == "time":
      secs = []
      for _ in range(req["steps"]):
        t = time.perf_counter()
        step()
        secs.append(time.perf_counter() - t)
      reply = {"seconds": secs}
    elif req["cmd"] == "info":
      import escnn
      reply = {"torch": torch.__version__, "escnn": getattr(escnn, "__version__", "?"),
               "threads": torch.get_num_threads(), "python": sys.version.split()[0]}
    elif req["cmd"] == "quit":
      return
    else:
      reply = {"error": f"unknown command {req['cmd']!r}"}
    print(json.dumps(reply), flush=True)


if __name__ == "__main__":
  main()
