"""`python -m target_worker [flags]`, the same as `specdec serve target [flags]`."""

from coordinator.cli import main_for_role

main_for_role("target")
