"""Links from a rendered report to its evidence: fixture and template lines at the head commit,
the workflow run, the uploaded artifact.

Built by the front ends from what GitHub Actions sets (`GITHUB_SERVER_URL`, `GITHUB_REPOSITORY`,
`GITHUB_RUN_ID`, the head SHA; `costguard.integrations.actions.evidence_links`) and handed to the
renderers. Every part is optional: a link whose parts are unknown is None, and the renderers then
show plain text (a local `--dry-run` has no links at all).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_URL = re.compile(r"https?://[^\s\"'<>`()\[\]]+")


def _url(value: str | None) -> str | None:
    """An http(s) URL without characters that could break out of Markdown or HTML, else None."""
    value = (value or "").strip()
    return value.rstrip("/") if _URL.fullmatch(value) else None


@dataclass(frozen=True)
class EvidenceLinks:
    """Where a reviewer can click through to; each field None when unknown."""

    server: str | None = None  # https://github.com (or a GitHub Enterprise Server)
    repo: str | None = None  # OWNER/NAME
    sha: str | None = None  # the head commit the fixtures were read at
    run_id: str | None = None
    artifact_url: str | None = None  # the uploaded report artifact (actions/upload-artifact)
    artifact_name: str | None = None
    root: str = ""  # the project directory (costguard.yaml's) inside the repository, "" at its top

    def __post_init__(self) -> None:
        # Normalise once: anything malformed is dropped rather than linked.
        object.__setattr__(self, "server", _url(self.server))
        object.__setattr__(self, "artifact_url", _url(self.artifact_url))
        repo = (self.repo or "").strip()
        object.__setattr__(self, "repo", repo if _REPO.fullmatch(repo) else None)
        sha = (self.sha or "").strip()
        object.__setattr__(self, "sha", sha.lower() if _SHA.fullmatch(sha) else None)
        run_id = (self.run_id or "").strip()
        object.__setattr__(self, "run_id", run_id if run_id.isdigit() else None)
        root = (self.root or "").strip().strip("/")
        object.__setattr__(self, "root", "" if root in ("", ".") else root)

    @property
    def repo_url(self) -> str | None:
        return f"{self.server}/{self.repo}" if self.server and self.repo else None

    @property
    def run_url(self) -> str | None:
        """The workflow run's page."""
        if self.repo_url and self.run_id:
            return f"{self.repo_url}/actions/runs/{self.run_id}"
        return None

    @property
    def artifact(self) -> str | None:
        """The artifact's own page when upload-artifact said it, else the run page's artifact list."""
        if self.artifact_url:
            return self.artifact_url
        return f"{self.run_url}#artifacts" if self.run_url and self.artifact_name else None

    def blob(self, path: str | None, line: int | None = None) -> str | None:
        """`{server}/{repo}/blob/{sha}/{path}#L{line}` for a project-relative path, or None."""
        if not (self.repo_url and self.sha and path):
            return None
        path = path.replace("\\", "/").lstrip("/")
        if path.startswith("../") or "/../" in path or re.match(r"^[A-Za-z]:", path):
            return None  # outside the repository: nothing to link to
        if self.root:
            path = f"{self.root}/{path}"
        url = f"{self.repo_url}/blob/{self.sha}/{quote(path)}"
        return f"{url}#L{int(line)}" if line else url

    def location(self, location: str | None) -> str | None:
        """A record's `file:line` location as a blob link (None when it cannot be linked)."""
        if not location:
            return None
        path, sep, line = location.rpartition(":")
        if sep and line.isdigit():
            return self.blob(path, int(line))
        return self.blob(location)

    def to_dict(self) -> dict[str, str | None]:
        return {
            "run": self.run_url,
            "artifact": self.artifact,
            "artifact_name": self.artifact_name,
            "commit": f"{self.repo_url}/commit/{self.sha}" if self.repo_url and self.sha else None,
            "sha": self.sha,
        }


NO_LINKS = EvidenceLinks()
