"""Test doubles: stand-ins for services costguard talks to (vLLM server and executable)."""
