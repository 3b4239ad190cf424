"""costguard: a CI gate for the token use, spend, latency and quality of routed LLM stacks."""

__version__ = "0.1.0"
