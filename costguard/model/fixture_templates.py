"""Rendering fixture messages from jinja2 template files: sandboxed, bounded, confined to the
project (or an `allowed_paths:` directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from costguard.errors import ConfigError
from costguard.model.yamlio import read_text


class TemplateRenderer:
    """Sandboxed, bounded jinja2 with StrictUndefined: a missing variable is an error, never an
    empty string; a render ends within the limits of `costguard.model.templating`.

    `{% include %}`, `{% import %}` and `{% extends %}` work, with names relative to the project
    root (like every path jinja2 resolves through a loader), and only reach files inside the
    root or an `allowed_paths:` directory.
    """

    def __init__(self, root: Path, allowed: tuple[Path, ...] = ()) -> None:
        from jinja2 import StrictUndefined
        from jinja2.sandbox import SandboxedEnvironment

        from costguard.model.templating import bounded_environment

        self.root = root
        self.allowed = allowed
        self._env = bounded_environment(
            SandboxedEnvironment,
            undefined=StrictUndefined,
            autoescape=False,
            loader=ProjectLoader(root, allowed),
        )
        self._cache: dict[Path, Any] = {}

    def render(
        self, path: Path, variables: dict[str, Any], *, file: Path, line: int | None, key: str
    ) -> str:
        from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError

        from costguard.model.paths import require_inside
        from costguard.model.templating import TemplateLimitError, render_bounded

        try:
            require_inside(
                path, self.root, self.allowed, what="template", file=file, line=line, key=key
            )
            is_file = path.is_file()
        except (OSError, ValueError) as exc:
            why = " ".join(str(exc).split())
            raise ConfigError(
                f"template path unusable: {why}"[:200], file=file, line=line, key=key
            ) from None
        template = self._cache.get(path)
        if template is None:
            source = read_text(path) if is_file else None
            if source is None:
                raise ConfigError(f"template file not found: {path}", file=file, line=line, key=key)
            try:
                template = self._env.from_string(source)
            except TemplateSyntaxError as exc:
                raise ConfigError(
                    f"template syntax error: {exc.message}", file=path, line=exc.lineno
                ) from None
            except RecursionError:
                raise ConfigError("template nested too deeply", file=path) from None
            self._cache[path] = template
        try:
            return render_bounded(template, **variables)
        except TemplateLimitError as exc:
            raise ConfigError(
                f"template {path.name}: {exc}", file=file, line=line, key=key
            ) from None
        except ConfigError as exc:  # an include outside the root, or unreadable
            raise ConfigError(
                f"template {path.name}: {exc}", file=file, line=line, key=key
            ) from None
        except TemplateSyntaxError as exc:  # in an included template
            raise ConfigError(
                f"template {path.name}: syntax error in {exc.name or 'an included template'} "
                f"line {exc.lineno}: {exc.message}",
                file=file,
                line=line,
                key=key,
            ) from None
        except (RecursionError, MemoryError):
            raise ConfigError(
                f"template {path.name}: nested or recursive too deeply",
                file=file,
                line=line,
                key=key,
            ) from None
        except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
            raise ConfigError(
                f"template {path.name}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}",
                file=file,
                line=line,
                key=key,
            ) from None
        except UndefinedError as exc:
            raise ConfigError(
                f"template {path.name}: {exc.message} (add it to vars:)",
                file=file,
                line=line,
                key=key,
            ) from None
        except TemplateError as exc:
            raise ConfigError(
                f"template {path.name}: {exc}", file=file, line=line, key=key
            ) from None


class ProjectLoader:
    """jinja2 loader for `{% include/import/extends %}`: names relative to the project root,
    resolved files must stay inside it (or an allowed directory)."""

    def __new__(cls, root: Path, allowed: tuple[Path, ...]) -> Any:
        from jinja2 import BaseLoader, TemplateNotFound

        from costguard.model.paths import require_inside

        class ProjectLoader(BaseLoader):
            def get_source(self, environment: Any, template: str) -> tuple[str, str, Any]:
                name = str(template)
                shown = name if len(name) <= 80 else name[:60] + "…"
                try:
                    path = Path(name) if Path(name).is_absolute() else root / name
                    require_inside(path, root, allowed, what=f"included template {shown!r} at")
                    found = path.is_file()
                    source = read_text(path) if found else ""
                    mtime = path.stat().st_mtime if found else 0.0
                except (OSError, ValueError) as exc:  # too long, NUL bytes, a loop...
                    why = " ".join(str(exc).split())
                    raise ConfigError(f"included template {shown!r}: {why}"[:200]) from None
                if not found:
                    raise TemplateNotFound(repr(shown))
                return source, str(path), lambda: path.is_file() and path.stat().st_mtime == mtime

        return ProjectLoader()
