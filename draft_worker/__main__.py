"""`python -m draft_worker [flags]`, the same as `specdec serve draft [flags]`."""

from specdec.launch.cli import main_for_role

main_for_role("draft")
