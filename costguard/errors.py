"""Error types that every front end turns into one clean line and an exit code.

The CLI, the pytest plugin and the Action scripts catch `CostguardError` and print
`str(error)`; nothing below them prints tracebacks for bad input.
"""

from __future__ import annotations

from pathlib import Path

EXIT_OK = 0
EXIT_VIOLATION = 1
EXIT_USAGE = 2


class CostguardError(Exception):
    """Base class: bad input or an environment problem the user can fix. Exit code 2."""

    exit_code = EXIT_USAGE

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


class ConfigError(CostguardError):
    """A YAML/JSON input (stack config, policy, fixtures, price table) is invalid."""


class UsageError(CostguardError):
    """Command-line arguments that do not make sense together."""


class TokenizerError(ConfigError):
    """A tier's tokenizer cannot be loaded; the message says how to fix it."""


class BackendError(CostguardError):
    """A serving backend (endpoint, vLLM process, server reply) failed or answered badly."""


class GitHubError(CostguardError):
    """The GitHub API refused or failed a request (the token is never part of the message)."""
