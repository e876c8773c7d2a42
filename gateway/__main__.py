"""`python -m gateway [flags]`, the same as `specdec serve gateway [flags]`."""

from specdec.launch.cli import main_for_role

main_for_role("gateway")
