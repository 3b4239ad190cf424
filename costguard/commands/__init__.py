"""CLI command groups beyond the core ones in `costguard.cli` (each registers itself on `cli`)."""
