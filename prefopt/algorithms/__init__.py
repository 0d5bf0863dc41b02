"""Algorithm modules on the shared engine."""
