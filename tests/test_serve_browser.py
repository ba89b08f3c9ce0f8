"""End to end in a real headless Chromium: `i2t serve --data shapes` on a free loopback port, the page loaded, a
photo picked (caption, tags, attention on hover), a sentence drawn, a round trip, and the phone-sized layout.

Chromium is driven over the DevTools protocol with a small websocket client written here (no selenium or
playwright to install). Skips with a clear message when no chromium is found (CI installs Debian's `chromium`).
Set I2T_SCREENSHOT_DIR to keep screenshots of the desktop and phone layouts.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="i2t serve needs its extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="i2t serve needs its extra: pip install -e '.[serve]'")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def find_browser() -> str | None:
    env = os.environ.get("I2T_CHROMIUM")
    if env:
        return env
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """End a server or browser this module started: politely, then by force."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


class DevTools:
    """Just enough of a websocket client (RFC 6455, text frames) to send DevTools commands and read answers."""

    def __init__(self, ws_url: str, timeout: float = 60.0) -> None:
        m = re.match(r"ws://([^/:]+):(\d+)(/.*)", ws_url)
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                           ).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("devtools connection closed")
            buf += chunk
        return buf

    def _send(self, text: str) -> None:
        data, mask = text.encode(), os.urandom(4)
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self) -> str:
        parts = []
        while True:
            b0, b1 = self._recv_exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._recv_exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._recv_exact(8))[0]
            payload = self._recv_exact(n)
            op = b0 & 0x0F
            if op == 0x8:
                raise ConnectionError("devtools closed the connection")
            if op in (0x9, 0xA):  # ping / pong: not part of a message
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts).decode()

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = ""):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.2)
        errors = self.js("[...document.querySelectorAll('.error')].map(e => e.textContent)")
        raise AssertionError(f"timed out waiting for {what or expression}; page errors: {errors}")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png",
                                                    captureBeyondViewport=True)["data"]))

    def close(self) -> None:
        self.sock.close()


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "img2text2img", "serve", "--data", "shapes", "--port", str(port),
                             "--threads", "1", "--device", "cpu"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=tmp_path_factory.mktemp("cwd"))
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 120, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    exe = find_browser()
    if exe is None:
        pytest.skip("no chromium found (apt-get install chromium, or set I2T_CHROMIUM=/path/to/chrome): "
                    "the browser test is skipped")
    port = free_port()
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                             "--window-size=1280,900", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/json/version", 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        tools.call("Page.enable")
        tools.call("Runtime.enable")
        tools.call("Page.navigate", url=server + "/")
        tools.wait_for("document.readyState === 'complete' && !document.getElementById('models')"
                       ".textContent.startsWith('loading')", 30, "the page to load")
        yield tools
        tools.close()
    finally:
        stop(proc)


def shots() -> Path | None:
    d = os.environ.get("I2T_SCREENSHOT_DIR")
    if d:
        Path(d).mkdir(parents=True, exist_ok=True)
    return Path(d) if d else None


def test_page_loads_with_the_models(browser):
    assert "shapes-captioner" in browser.js("document.getElementById('models').textContent")
    assert browser.js("document.getElementById('guidance-field').hidden") is True  # the scene generator has none
    # nothing is fetched from elsewhere: every resource the page loaded is on the server itself
    hosts = browser.js("[...performance.getEntriesByType('resource')].map(e => new URL(e.name).host)")
    assert all(h.startswith("127.0.0.1:") for h in hosts), hosts


def test_pick_a_photo_and_see_its_caption_tags_and_attention(browser, tmp_path):
    from img2text2img.data.shapes import draw_caption

    photo = tmp_path / "circle.png"
    draw_caption("a large red circle on the left", seed=1).save(photo)
    doc = browser.call("DOM.getDocument")["root"]["nodeId"]
    node = browser.call("DOM.querySelector", nodeId=doc, selector="#photo-input")["nodeId"]
    browser.call("DOM.setFileInputFiles", files=[str(photo)], nodeId=node)
    caption = browser.wait_for("document.getElementById('caption-text').textContent.trim()", 60, "a caption")
    assert "circle" in caption
    assert browser.js("document.querySelectorAll('#tags li').length") >= 1
    # hovering a word darkens the photo except where that word looked
    browser.js("document.querySelector('#caption-text .word').dispatchEvent(new Event('mouseenter'))")
    painted = browser.js("(() => { const c = document.querySelector('#photo-pic canvas');"
                         "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                         "let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; })()")
    assert painted > 0
    if shots():
        browser.screenshot(shots() / "serve-desktop-photo.png")


def test_type_a_sentence_and_see_the_pictures(browser):
    browser.js("document.getElementById('prompt').value = 'a small blue square on the right';"
               "document.getElementById('n').value = '4';"
               "document.getElementById('draw-form').requestSubmit()")
    width = browser.wait_for("document.getElementById('grid-img').complete && "
                             "document.getElementById('grid-img').naturalWidth", 60, "the drawings")
    assert width > 64  # a 2x2 grid of 64x64 pictures
    assert "4 pictures" in browser.js("document.getElementById('draw-meta').textContent")


def test_round_trip_shows_caption_back_and_bleu(browser):
    browser.js("document.getElementById('rt-prompt').value = 'a large green triangle at the top';"
               "document.getElementById('rt-form').requestSubmit()")
    back = browser.wait_for("document.getElementById('rt-caption').textContent.trim()", 60, "the caption back")
    assert back
    assert browser.js("document.getElementById('rt-bleu').dataset.bleu4") is not None
    if shots():
        browser.screenshot(shots() / "serve-desktop.png")


def test_a_bad_request_shows_the_servers_message(browser):
    browser.js("document.getElementById('n').value = '17'; document.getElementById('n').max = '99';"
               "document.getElementById('draw-form').requestSubmit()")
    msg = browser.wait_for("document.getElementById('draw-error').textContent", 30, "the error line")
    assert "16" in msg
    browser.js("document.getElementById('n').value = '4'; document.getElementById('draw-error').textContent = ''")


def test_the_api_docs_render_offline(browser, server):
    pytest.importorskip("swagger_ui_bundle", reason="the offline API docs need swagger-ui-bundle (the serve extra)")
    browser.call("Page.navigate", url=server + "/docs")
    try:
        title = browser.wait_for("document.querySelector('.swagger-ui .info .title') && "
                                 "document.querySelector('.swagger-ui .info .title').textContent", 30, "Swagger UI")
        assert "img2text2img" in title
        assert browser.js("document.querySelectorAll('.opblock').length") >= 5  # the five API endpoints
    finally:
        browser.call("Page.navigate", url=server + "/")
        browser.wait_for("document.readyState === 'complete' && !document.getElementById('models')"
                         ".textContent.startsWith('loading')", 30, "the page to load again")


def test_phone_sized_window_has_no_sideways_scrolling(browser):
    browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
    try:
        browser.wait_for("document.documentElement.clientWidth === 390", 10, "the phone viewport")
        assert browser.js("document.documentElement.scrollWidth") <= 390
        if shots():
            browser.screenshot(shots() / "serve-phone.png")
    finally:
        browser.call("Emulation.clearDeviceMetricsOverride")
