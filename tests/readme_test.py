"""The README's API example runs as written."""

import os
import re

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def test_readme_example_runs():
  with open(README) as f:
    text = f.read()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  assert blocks, "the README has no python example"
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {})   # pylint: disable=exec-used
