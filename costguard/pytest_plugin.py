"""pytest plugin entry point (`pytest --costguard`)."""
