"""The README's API examples run as written, in order."""

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_readme_example_runs():
  with open(README) as f:
    text = f.read()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  assert blocks, "the README has no python example"
  namespace = {}                                    # in order, as a reader runs them
  for i, block in enumerate(blocks):   # (a name that is no file: hypothesis reads sources)
    exec(compile(block, f"<README.md block {i + 1}>", "exec"), namespace)  # pylint: disable=exec-used
