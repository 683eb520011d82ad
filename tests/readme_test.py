"""The README's API examples run as written, in order; its links and the docs' lead somewhere."""

import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")
README = os.path.join(ROOT, "README.md")


def test_readme_example_runs():
  with open(README) as f:
    text = f.read()
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  assert blocks, "the README has no python example"
  namespace = {}                                    # in order, as a reader runs them
  for i, block in enumerate(blocks):   # (a name that is no file: hypothesis reads sources)
    exec(compile(block, f"<README.md block {i + 1}>", "exec"), namespace)  # pylint: disable=exec-used


def _prose(path: str, spans: bool = False) -> str:
  """The file's text without its code blocks, and without its inline code spans unless
  ``spans`` (a heading's anchor keeps their text)."""
  with open(path) as f:
    text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
  return text if spans else re.sub(r"`[^`\n]*`", "", text)


def _anchors(path: str) -> set[str]:
  """The anchors GitHub gives a Markdown file's headings: lower case, punctuation but hyphens
  dropped, spaces as hyphens, a repeated heading numbered -1, -2, ..."""
  seen, out = {}, set()
  for title in re.findall(r"^#+\s+(.*)$", _prose(path, spans=True), re.M):
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    out.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
    seen[slug] = seen.get(slug, 0) + 1
  return out


def test_the_readme_and_docs_links_lead_to_files_and_headings_that_exist():
  docs = os.path.join(ROOT, "docs")
  pages = [README] + [os.path.join(docs, f) for f in sorted(os.listdir(docs))
                      if f.endswith(".md")]
  broken = []
  for page in pages:
    for link in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
      if re.match(r"[a-z]+:", link):                # a web address: not checked offline
        continue
      name, _, anchor = link.partition("#")
      target = os.path.normpath(os.path.join(os.path.dirname(page), name)) if name else page
      if not os.path.exists(target):
        broken.append(f"{os.path.relpath(page, ROOT)}: {link} (no such file)")
      elif anchor and target.endswith(".md") and anchor not in _anchors(target):
        broken.append(f"{os.path.relpath(page, ROOT)}: {link} (no such heading)")
  assert not broken, "\n".join(broken)
