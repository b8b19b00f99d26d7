"""Open a page in headless Chromium and report what a reader would see go wrong: images that did not
load and console errors. Talks the DevTools protocol over a WebSocket with the standard library only
(no selenium, no websocket package): enough of RFC 6455 for small JSON messages."""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import urllib.request

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "chromium-headless-shell",
            "headless_shell")


def find_browser() -> str | None:
    """The path of a Chromium-family browser on PATH (or $APDSPEC_BROWSER), or None."""
    named = os.environ.get("APDSPEC_BROWSER")
    if named:
        return shutil.which(named) or (named if os.path.exists(named) else None)
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


class _Socket:
    """A client WebSocket: masked text frames out, frames in (pings answered, fragments joined)."""

    def __init__(self, url: str, timeout: float):
        rest = url.split("://", 1)[1]
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("the browser closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"WebSocket handshake refused: {head[:200]!r}")
        self.buf = head.split(b"\r\n\r\n", 1)[1]

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the browser closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, text: str, opcode: int = 1) -> None:
        data = text.encode() if isinstance(text, str) else text
        head = bytes([0x80 | opcode])
        n = len(data)
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 1 << 16:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def recv(self) -> str:
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = b0 & 0x0F
            if opcode == 9:  # ping
                self.send(data, opcode=10)
                continue
            if opcode == 8:
                raise ConnectionError("the browser closed the WebSocket")
            parts.append(data)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


def open_page(browser: str, path: str, timeout: float = 60.0) -> dict:
    """Load the file `path` in a fresh headless browser; returns {"images": [(src prefix, complete,
    naturalWidth)], "errors": [console errors and uncaught exceptions], "title": ...}."""
    profile = tempfile.mkdtemp(prefix="apdspec-browser-")
    proc = subprocess.Popen([browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--remote-debugging-port=0", f"--user-data-dir={profile}",
                             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.time() + timeout
        while not (os.path.exists(port_file) and open(port_file).read().strip()):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{browser} did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        port = int(open(port_file).read().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=timeout) as r:
            pages = [t for t in json.load(r) if t.get("type") == "page"]
        ws = _Socket(pages[0]["webSocketDebuggerUrl"], timeout)
        try:
            return _inspect(ws, "file://" + os.path.abspath(path), deadline)
        finally:
            ws.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def _inspect(ws: _Socket, url: str, deadline: float) -> dict:
    ids = iter(range(1, 1 << 30))
    errors: list[str] = []
    pending: dict[int, dict] = {}

    def call(method: str, **params) -> dict:
        i = next(ids)
        ws.send(json.dumps({"id": i, "method": method, "params": params}))
        while i not in pending:
            handle(json.loads(ws.recv()))
        return pending.pop(i)

    loaded = []

    def handle(msg: dict) -> None:
        if "id" in msg:
            pending[msg["id"]] = msg
            return
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            errors.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:300])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            errors.append(f"log: {e.get('text')} ({e.get('url', '')})")
        elif m == "Page.loadEventFired":
            loaded.append(True)

    for method in ("Runtime.enable", "Log.enable", "Page.enable"):
        call(method)
    call("Page.navigate", url=url)
    while not loaded:
        if time.time() > deadline:
            raise TimeoutError(f"{url} did not finish loading")
        handle(json.loads(ws.recv()))
    check = ("JSON.stringify({title: document.title, images: Array.from(document.images).map("
             "i => [i.getAttribute('src').slice(0, 40), i.complete, i.naturalWidth])})")
    res = call("Runtime.evaluate", expression=check, returnByValue=True)
    out = json.loads(res["result"]["result"]["value"])
    time.sleep(0.2)  # late console messages
    ws.sock.settimeout(0.3)
    try:
        while True:
            handle(json.loads(ws.recv()))
    except (socket.timeout, TimeoutError):
        pass
    out["errors"] = errors
    return out
