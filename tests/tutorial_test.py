"""docs/tutorial.md and docs/examples.md run as written; every number they show is what
running them prints.

Each ```python block runs in one shared namespace, in order; the ```text block right after it
must match what the block printed, each number within 0.02 + 5% of it (float32 training on
another CPU may round differently in the last digits, and a trained model with it). ``UPDATE_TUTORIAL=1 pytest tests/tutorial_test.py``
(``make tutorial``) rewrites the text blocks from a fresh run.
"""

import contextlib
import io
import os
import re
import time

import pytest

DOCS = os.path.join(os.path.dirname(__file__), "..", "docs")
BLOCK = re.compile(r"```python\n(.*?)```\n(?:\n```text\n(.*?)```\n)?", re.S)
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def _same(expected: str, got: str) -> bool:
  a, b = expected.strip().splitlines(), got.strip().splitlines()
  if len(a) != len(b):
    return False
  for x, y in zip(a, b):
    if NUMBER.sub("#", x) != NUMBER.sub("#", y):
      return False
    for u, v in zip(NUMBER.findall(x), NUMBER.findall(y)):
      if abs(float(u) - float(v)) > 0.02 + 0.05 * abs(float(u)):
        return False
  return True


@pytest.mark.parametrize("page, min_blocks", [("tutorial.md", 8), ("examples.md", 6)])
def test_page_runs_and_shows_what_it_prints(page, min_blocks):
  path = os.path.join(DOCS, page)
  with open(path) as f:
    text = f.read()
  namespace, pieces, last, start = {}, [], 0, time.time()
  blocks = list(BLOCK.finditer(text))
  assert len(blocks) >= min_blocks, f"{page} lost its code"
  for i, m in enumerate(blocks):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
      exec(compile(m.group(1), f"{page} block {i + 1}", "exec"), namespace)  # pylint: disable=exec-used
    got = out.getvalue()
    if os.environ.get("UPDATE_TUTORIAL"):
      pieces.append(text[last:m.start()] + f"```python\n{m.group(1)}```\n")
      if got:
        pieces.append(f"\n```text\n{got}```\n")
      last = m.end()
    else:
      assert _same(m.group(2) or "", got), (
          f"{page} block {i + 1} printed:\n{got}\nbut the page shows:\n{m.group(2)}")
  if os.environ.get("UPDATE_TUTORIAL"):
    with open(path, "w") as f:
      f.write("".join(pieces) + text[last:])
  assert time.time() - start < 120, f"{page} must run in under two minutes"
