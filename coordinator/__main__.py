"""`python -m coordinator [flags]`, the same as `specdec serve coordinator [flags]`."""

from specdec.launch.cli import main_for_role

main_for_role("coordinator")
