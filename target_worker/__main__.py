"""`python -m target_worker [flags]`, the same as `specdec serve target [flags]`."""

from specdec.launch.cli import main_for_role

main_for_role("target")
