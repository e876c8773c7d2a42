"""Plain helpers shared by tests (fixtures live in the conftest files)."""
