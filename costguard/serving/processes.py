"""Process groups and HTTP probes of launched servers: alive, stopped, healthy, serving which
models, their log tails."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

LOG_TAIL_LINES = 40


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc), to tell a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def group_alive(pgid: int) -> bool:
    """Whether any non-zombie process is left in the process group."""
    proc = Path("/proc")
    if proc.is_dir():
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read()
    except OSError:
        return []
    return data.decode("utf-8", errors="replace").splitlines()[-lines:]


def probe_health(base_url: str, timeout_s: float = 2.0) -> str:
    """ "ready" (200), "unhealthy" (503: engine not up or dead), "refused" (not listening yet),
    or "error: ..." for anything else."""
    try:
        with urllib.request.urlopen(f"{base_url}/health", timeout=timeout_s) as resp:
            return "ready" if resp.status == 200 else f"error: HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return "unhealthy" if exc.code == 503 else f"error: HTTP {exc.code}"
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return "refused"
        return f"error: {exc.reason}"
    except (ConnectionError, TimeoutError, OSError) as exc:
        if isinstance(exc, ConnectionRefusedError):
            return "refused"
        return f"error: {type(exc).__name__}"


def served_models(base_url: str, api_key: str | None, timeout_s: float = 5.0) -> list[str]:
    """Model ids from `/v1/models` (to be sure the server on the port is the tier's)."""
    request = urllib.request.Request(f"{base_url}/v1/models")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            body = json.loads(resp.read())
    except (urllib.error.URLError, OSError, ValueError):
        return []
    data = body.get("data") if isinstance(body, dict) else None
    return [m.get("id") for m in data or [] if isinstance(m, dict)]


def port_in_use(host: str, port: int) -> bool:
    import socket

    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        with socket.create_connection((target, port), timeout=0.5):
            return True
    except OSError:
        return False
