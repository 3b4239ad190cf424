"""Open a page in real headless Chromium over the DevTools protocol: console errors, the page's own
measurements (a JavaScript expression), and a full-page screenshot.

Debian's `chromium` package; tests skip with the reason when it is not installed. The browser
binds its DevTools port to 127.0.0.1 and is stopped (its process group) when the page is done.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


SKIP_REASON = (
    "Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
)


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    value: Any = None  # what the probe expression returned
    screenshot: bytes = b""
    top: bytes = b""  # the first `top_height` pixels only (for the README)


def _start(binary: str, profile: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with {proc.returncode} before DevTools listened"
                )
            continue
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            return proc, match.group(1)
    proc.kill()
    raise RuntimeError("chromium did not start its DevTools endpoint within 60 s")


def _stop(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def _session(
    ws_url: str, url: str, probe: str, width: int, timeout: float, top_height: int
) -> PageResult:
    import aiohttp

    result = PageResult()
    async with aiohttp.ClientSession() as http, http.ws_connect(ws_url, max_msg_size=0) as ws:
        ids = iter(range(1, 1_000_000))
        pending: dict[int, asyncio.Future[Any]] = {}
        loaded = asyncio.Event()
        session_id: str | None = None

        async def reader() -> None:
            async for msg in ws:
                data = json.loads(msg.data)
                if "id" in data and data["id"] in pending:
                    pending.pop(data["id"]).set_result(data)
                    continue
                method, params = data.get("method"), data.get("params") or {}
                if method == "Runtime.consoleAPICalled" and params.get("type") in (
                    "error",
                    "assert",
                ):
                    text = " ".join(
                        str(a.get("value", a.get("description", "")))
                        for a in params.get("args", [])
                    )
                    result.errors.append(f"console.{params['type']}: {text}")
                elif method == "Runtime.exceptionThrown":
                    details = params.get("exceptionDetails") or {}
                    result.errors.append(
                        f"exception: {details.get('text')} {details.get('exception', {}).get('description', '')}"
                    )
                elif (
                    method == "Log.entryAdded"
                    and (params.get("entry") or {}).get("level") == "error"
                ):
                    entry = params["entry"]
                    result.errors.append(
                        f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}"
                    )
                elif method == "Page.loadEventFired":
                    loaded.set()

        async def call(method: str, params: dict[str, Any] | None = None) -> Any:
            n = next(ids)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            pending[n] = future
            message: dict[str, Any] = {"id": n, "method": method, "params": params or {}}
            if session_id is not None:
                message["sessionId"] = session_id
            await ws.send_str(json.dumps(message))
            reply = await asyncio.wait_for(future, timeout)
            if "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            return reply.get("result")

        task = asyncio.create_task(reader())
        try:
            target = await call("Target.createTarget", {"url": "about:blank"})
            attached = await call(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
            )
            session_id = attached["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                await call(f"{domain}.enable")
            await call("Emulation.setDeviceMetricsOverride",
                       {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False})  # fmt: skip
            await call("Page.navigate", {"url": url})
            await asyncio.wait_for(loaded.wait(), timeout)
            await asyncio.sleep(0.3)  # late console messages
            evaluated = await call("Runtime.evaluate", {"expression": probe, "returnByValue": True})
            if "exceptionDetails" in evaluated:
                result.errors.append(f"probe failed: {evaluated['exceptionDetails'].get('text')}")
            result.value = (evaluated.get("result") or {}).get("value")
            metrics = await call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            shot = await call(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {
                        "x": 0,
                        "y": 0,
                        "width": width,
                        "height": min(size["height"], 16000),
                        "scale": 1,
                    },
                },
            )
            result.screenshot = base64.b64decode(shot["data"])
            if top_height:
                clip = {"x": 0, "y": 0, "width": width, "height": top_height, "scale": 1}
                top = await call(
                    "Page.captureScreenshot",
                    {"format": "png", "clip": clip, "captureBeyondViewport": True},
                )
                result.top = base64.b64decode(top["data"])
        finally:
            task.cancel()
    return result


def open_page(
    path: Path,
    probe: str = "null",
    *,
    width: int = 1200,
    timeout: float = 60,
    top_height: int = 0,
) -> PageResult:
    """Load `path` (file://) in a fresh headless Chromium; errors, the probe's value, a screenshot."""
    binary = chromium()
    if binary is None:
        raise RuntimeError(SKIP_REASON)
    with tempfile.TemporaryDirectory(prefix="costguard-chromium-") as profile:
        proc, ws_url = _start(binary, profile)
        try:
            return asyncio.run(
                _session(ws_url, path.resolve().as_uri(), probe, width, timeout, top_height)
            )
        finally:
            _stop(proc)
