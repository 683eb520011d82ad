"""`make bench`'s section `lift_overhead`: the lift's cost against |G| calls of F, a plain CNN
lifted over C2, C4 and D4 in each of its forms (the default, the fold as one call, the vmap,
one call per element, chunks), forward and gradient, with each gradient's compile time; and
what the default costs un-jitted.

    python -m experiments.bench --only=lift_overhead
"""

from __future__ import annotations

from experiments.timing import alternate, compile_stats

CHUNK_IMAGES = 256
FOLDED = "no lift: F on the \\|G\\| B images (reference)"


def bench_lift_overhead(rounds, quick, report):
  import jax
  import jax.numpy as jnp
  import eqnn
  from eqnn import actions, models
  base = models.PlainCNN((16, 32, 32), (2, 2, 1), (128,))
  acts = {"C2": actions.rotations(2), "C4": actions.rotations(), "D4": actions.rotations_reflections()}
  for b in ([64] if quick else [32, 128]):
    x = jax.random.normal(jax.random.key(0), (b, 28, 28, 1))
    params = base.init(jax.random.key(1), x[:1])
    f = jax.jit(base.apply)
    variants = {"F": lambda: f(params, x)}
    grad_f = jax.grad(lambda p, x: jnp.sum(base.apply(p, x) ** 2))
    grads = {"F": jax.jit(grad_f)}
    # What each form costs to compile: its gradient, lowered and compiled before any run.
    compile_s = {"F": compile_stats(grad_f, params, x)[0]}
    # The lift's forms: the default ("auto": G folded into F's batch axis where F is proved
    # to map each image on its own, else the vmap; on CPU the fold split into calls that
    # keep F's intermediates within eqnn.fold.FOLD_BYTES_CPU; the row's label says which,
    # from eqnn.lift.fold_plan), the fold as one call ("batch"), one vmap over G, one call
    # per element, and vmaps over chunks of elements that hold CHUNK_IMAGES images per call
    # (where that splits G).
    def auto(act):
      verdict, per_call = eqnn.lift.fold_plan(base.apply, act, params, x, argnum=1)
      calls = -(-act.group.order // per_call)
      return ("default (auto: vmap)" if not verdict else "default (auto: folded)"
              if calls == 1 else f"default (auto: {calls} folded calls)")
    def forms(n, act):
      default = auto(act)
      return {default: "auto",
              **({"one fold": "batch"} if "calls" in default else {}),
              "vmap": True, "unrolled": False,
              **({f"chunks of {CHUNK_IMAGES // b}": CHUNK_IMAGES // b}
                 if 1 < CHUNK_IMAGES // b < n else {})}
    report["lift_bytes_per_example"] = eqnn.lift.folds(base.apply, acts["C2"], params, x,
                                                       argnum=1).bytes_per_example
    form_of = {gname: forms(act.group.order, act) for gname, act in acts.items()}
    for gname, act in acts.items():
      for how, vec in form_of[gname].items():
        key = (gname, how)
        lifted = eqnn.equivarify(base.apply, act, argnum=1, vectorize=vec)
        variants[key] = (lambda fh: lambda: fh(params, x))(jax.jit(lifted))
        grad = jax.grad(lambda p, x, lifted=lifted: jnp.sum(lifted(p, x) ** 2))
        compile_s[key] = compile_stats(grad, params, x)[0]
        grads[key] = jax.jit(grad)
      # The reference without a lift: F itself on the |G| B moved images as one batch. Its
      # ratio is F's own cost per image at |G| times the batch, which no form of the lift
      # that makes one call can beat; the vmap lift's excess over it is the lift's own.
      key = (gname, FOLDED)
      copies = jax.jit(lambda x, act=act: eqnn.lift.lift_inputs(act, x))(x)
      big = copies.reshape((-1,) + x.shape[1:])                   # [|G| B, 28, 28, 1]
      variants[key] = (lambda big: lambda: f(params, big))(big)
      grads[key] = (grads["F"], big)
      compile_s[key] = compile_stats(grad_f, params, big)[0]
    # 5x the rounds: one forward of F at batch 32 takes a few milliseconds, and with 5
    # rounds the medians moved these ratios by up to 0.4 between runs. (Not repetitions
    # inside a timing: calls dispatched back to back overlap on the two cores.)
    t = alternate(variants, 5 * rounds)
    with_arg = lambda g: g if isinstance(g, tuple) else (g, x)    # (gradient, its input)
    tg = alternate({k: (lambda g, a: lambda: g(params, a))(*with_arg(g))
                    for k, g in grads.items()}, 5 * rounds)
    for gname, act in acts.items():
      n = act.group.order
      for how in [*form_of[gname], FOLDED]:
        key = (gname, how)
        row = {"group": gname, "order": n, "batch": b, "lift": how,
               "forward_ratio": t[key] / (n * t["F"]), "gradient_ratio": tg[key] / (n * tg["F"]),
               "gradient_compile_s": compile_s[key]}
        report["lift_overhead"].append(row)
        plain = how.replace("\\", "")
        print(f"  lift over {gname} (|G|={n}, {plain:8s}) batch {b:4d}: "
              f"time(F_hat)/(|G| time(F)) = {row['forward_ratio']:.3f} forward, "
              f"{row['gradient_ratio']:.3f} gradient (compiled in "
              f"{row['gradient_compile_s']:.2f} s)", flush=True)
  # What "auto" costs where nothing is compiled: its proof traces F twice at every call of
  # an un-jitted lift (under jax.jit, once per compilation). Eager calls of the default and
  # of the plain vmap over D4, batch 8, alternated; and the proof (eqnn.lift.folds) alone.
  d4 = acts["D4"]
  x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1))
  params = base.init(jax.random.key(1), x[:1])
  eager = {how: (lambda fh: lambda: fh(params, x))(eqnn.equivarify(base.apply, d4, argnum=1,
                                                                   vectorize=vec))
           for how, vec in (("default (auto)", "auto"), ("vmap", True))}
  eager["the proof alone"] = lambda: eqnn.lift.folds(base.apply, d4, params, x, argnum=1)
  t = alternate(eager, rounds)
  report["lift_overhead_eager"] = {k: 1e3 * v for k, v in t.items()}
  print("  un-jitted lift over D4, batch 8: " + ", ".join(
      f"{k} {1e3 * v:.1f} ms" for k, v in t.items()), flush=True)
