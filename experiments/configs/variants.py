"""Config variants (``--config=file.py:variant``), parsed one way by every config file."""

from __future__ import annotations

from typing import Sequence


def parse(variant: str, valid: Sequence[str], config: str) -> str:
  """``variant`` if it is one of ``valid`` ("" is the config itself), else a ValueError
  that names the valid ones."""
  if variant not in valid:
    names = ", ".join(repr(v) for v in valid)
    raise ValueError(f"unknown variant {variant!r} of the {config} config; choose one of {names}")
  return variant
