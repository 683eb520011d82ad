"""The experiments' re-execution under glibc's huge pages for malloc (experiments/host_memory.py)."""

import json
import os
import subprocess
import sys

from experiments import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_environment_adds_or_removes_only_the_hugetlb_tunable():
  env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0", "X": "1"}
  on = host_memory.environment(True, env)
  assert on["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
  assert on["X"] == "1" and on[host_memory.OPT_OUT] == "1"
  off = host_memory.environment(False, env)
  assert off["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
  assert off[host_memory.OPT_OUT] == "0"
  assert "GLIBC_TUNABLES" not in host_memory.environment(False, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
  assert env["GLIBC_TUNABLES"].endswith("hugetlb=0")          # the argument is not changed


def test_opt_out_and_a_set_tunable_are_reasons_not_to_reexecute(monkeypatch):
  monkeypatch.setenv(host_memory.OPT_OUT, "0")
  assert host_memory.problem() == f"{host_memory.OPT_OUT}=0"
  assert host_memory.status().startswith("off: ")
  monkeypatch.delenv(host_memory.OPT_OUT)
  monkeypatch.setenv("GLIBC_TUNABLES", host_memory.TUNABLE)
  assert "already" in host_memory.problem()
  assert host_memory.status().startswith("on (")


def test_process_start_is_the_first_process_s(monkeypatch):
  monkeypatch.delenv(host_memory.START, raising=False)
  assert host_memory.process_start(5.0) == 5.0
  monkeypatch.setenv(host_memory.START, "3.25")
  assert host_memory.process_start(5.0) == 3.25


def _child_report(tmp_path, env):
  script = tmp_path / "child.py"
  script.write_text(
      "import json, os, sys\n"
      f"sys.path.insert(0, {ROOT!r})\n"
      "from experiments import host_memory\n"
      "host_memory.reexec_with_huge_pages(1.5)\n"
      "print(json.dumps({'pid': os.getpid(), 'argv': sys.argv[1:],\n"
      "                  'tunables': os.environ.get('GLIBC_TUNABLES', ''),\n"
      "                  'start': host_memory.process_start(9.0),\n"
      "                  'status': host_memory.status()}))\n")
  p = subprocess.Popen([sys.executable, str(script), "--flag=a b"], env=env,
                       stdout=subprocess.PIPE, text=True)
  out, _ = p.communicate(timeout=60)
  assert p.returncode == 0
  lines = out.strip().splitlines()
  assert len(lines) == 1, lines          # one process printed: the re-executed one, if any
  return p.pid, json.loads(lines[0])


def test_the_command_reexecutes_once_with_the_tunable_where_it_helps(tmp_path, monkeypatch):
  env = host_memory.environment(False, os.environ)
  env.pop(host_memory.OPT_OUT)
  env.pop(host_memory.START, None)
  pid, r = _child_report(tmp_path, env)
  assert r["pid"] == pid                  # the same process (exec), so signals still reach it
  assert r["argv"] == ["--flag=a b"]      # the same command line
  for name in ("GLIBC_TUNABLES", host_memory.OPT_OUT):      # what the child started with
    monkeypatch.delenv(name, raising=False)
  if "GLIBC_TUNABLES" in env:
    monkeypatch.setenv("GLIBC_TUNABLES", env["GLIBC_TUNABLES"])
  if host_memory.problem() is None:
    assert "glibc.malloc.hugetlb=1" in r["tunables"] and r["status"].startswith("on")
    assert r["start"] == 1.5              # the first process's start time, carried over
  else:                                   # not Linux/glibc >= 2.35, or huge pages off here
    assert r["tunables"] == env.get("GLIBC_TUNABLES", "") and r["start"] == 9.0, r


def test_the_opt_out_keeps_the_process_as_it_is(tmp_path):
  env = host_memory.environment(False, os.environ)
  _, r = _child_report(tmp_path, env)
  assert r["tunables"] == "" and r["status"] == f"off: {host_memory.OPT_OUT}=0"


def test_the_bench_child_reports_a_step_with_its_page_faults():
  env = dict(host_memory.environment(True), JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "experiments.host_memory",
                        "--config=experiments/configs/default.py:smoke", "--steps=1",
                        "--seconds=0"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["images_per_s"] > 0 and r["steps"] == 1 and r["faults_per_step"] >= 0
  assert r["temp_bytes"] > 0                  # the compiled step's temporary buffer
  assert r["huge_pages"].startswith("on")


def test_a_failed_restart_runs_on_as_it_is(monkeypatch, capsys):
  monkeypatch.setattr(host_memory, "problem", lambda: None)
  def refuse(*args):
    raise OSError("exec refused")
  monkeypatch.setattr(os, "execve", refuse)
  host_memory.reexec_with_huge_pages(1.0)                  # returns: no exception
  assert "running without" in capsys.readouterr().err
