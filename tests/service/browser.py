"""Headless Chromium for the browser tests, driven over the Chrome DevTools Protocol (CDP).

Debian's ``chromium`` (installed by ``scripts/setup.sh``) listens on a local DevTools port; one
page is driven through its WebSocket with aiohttp, which the environment already has (BentoML
depends on it). No WebDriver, no browser download, no second version to keep in step with the
browser: CDP is the browser's own protocol.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Self

import aiohttp
import requests

from ferops.processes import stop_process_group

#: The browser binary (Debian's package name).
CHROMIUM = "chromium"


class BrowserError(RuntimeError):
    """A DevTools call failed, a page script threw, or a wait timed out."""


class Chromium:
    """One headless Chromium process and one of its pages.

    Use as a context manager; every method blocks until the browser has answered."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        binary = shutil.which(CHROMIUM)
        if binary is None:
            raise BrowserError(f"`{CHROMIUM}` is not on PATH: run scripts/setup.sh (installs it)")
        profile.mkdir(parents=True, exist_ok=True)
        args = [
            binary,
            "--headless",
            "--disable-gpu",
            "--no-first-run",
            "--mute-audio",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        if os.geteuid() == 0:  # Chromium refuses to run as root with its sandbox (CI containers)
            args.insert(1, "--no-sandbox")
        self.log = profile / "chromium.log"
        self._log = open(self.log, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.console: list[str] = []  # page console messages and uncaught errors, for failures
        self._loop = asyncio.new_event_loop()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._id = 0
        try:
            port = self._devtools_port(profile / "DevToolsActivePort", timeout=60)
            targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
            page = next(t for t in targets if t["type"] == "page")
            self._loop.run_until_complete(self._connect(page["webSocketDebuggerUrl"]))
            for domain in ("Page", "Runtime", "DOM"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _devtools_port(self, path: Path, timeout: float) -> int:
        """Chromium writes the port it picked (``--remote-debugging-port=0``) to this file."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text()[-2000:]
                raise BrowserError(f"chromium exited with {self.proc.returncode}: {tail}")
            if path.is_file() and path.read_text().strip():
                return int(path.read_text().splitlines()[0])
            time.sleep(0.2)
        raise BrowserError(f"chromium opened no DevTools port within {timeout} s")

    async def _connect(self, url: str) -> None:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(url, max_msg_size=0)  # screenshots are large

    async def _call(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._id += 1
        await self._ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self._ws.receive_str())
                if message.get("id") == self._id:
                    if "error" in message:
                        raise BrowserError(f"{method}: {message['error']}")
                    return message["result"]
                self._note(message)

    def _note(self, event: dict[str, Any]) -> None:
        """Keep what the page printed or threw: a failing test shows it."""
        params = event.get("params", {})
        if event.get("method") == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.console.append(f"console.{params['type']}: {text}")
        elif event.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            error = details.get("exception", {}).get("description", details["text"])
            self.console.append(f"uncaught: {error}")

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """One CDP command, e.g. ``call("Page.navigate", url=...)``; returns its result."""
        return self._loop.run_until_complete(self._call(method, params, timeout))

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises are awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            error = details.get("exception", {}).get("description", details)
            raise BrowserError(f"{expression!r} threw: {error}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Poll until ``expression`` is truthy in the page; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise BrowserError(
            f"{expression!r} still false after {timeout} s; page console: {self.console}"
        )

    def open(self, url: str, timeout: float = 60) -> None:
        """Load ``url`` and wait until the page and its scripts have loaded."""
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise BrowserError(f"{url}: {answer['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout)

    def choose_files(self, selector: str, files: list[Path]) -> None:
        """Pick ``files`` in the ``<input type=file>`` at ``selector``, as a person would (the
        page gets its ``change`` event)."""
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        if not node:
            raise BrowserError(f"no element matches {selector!r}")
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(f.resolve()) for f in files])

    def screenshot(self, path: Path) -> Path:
        """The whole page (not just the window) as a PNG."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = self.call(
            "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        """Close the connection and stop the browser with everything it spawned."""
        if self._ws is not None:
            self._loop.run_until_complete(self._ws.close())
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
        self._ws = self._session = None
        if not self._loop.is_closed():
            self._loop.close()
        stop_process_group(self.proc)
        self._log.close()
