"""Talking to live serving stacks: the OpenAI-compatible replay client and vLLM metrics."""
