"""CLI command groups beyond the core ones in `costguard.cli.main` (each registers itself on `cli`)."""
