"""``python -m personalization`` = ``pz`` (for an interpreter whose scripts are not on PATH)."""

from personalization.cli import pz

pz(prog_name="pz")
