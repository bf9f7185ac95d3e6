"""Drive the editor page in headless Chromium against dev/harness.py.

Starts the harness on a free port, opens /doc/<id> in Chromium (Playwright),
types, marks places from a pycrdt client acting as the agent, checks the DOM
contract and writes screenshots. Exits non-zero on the first failed check.

    python docserver/editor/dev/check_browser.py --out /tmp/editor-shots
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import websockets
from playwright.async_api import Page, async_playwright
from pycrdt import (
    Awareness,
    Doc,
    Provider,
    XmlElement,
    XmlFragment,
    XmlText,
    create_awareness_message,
)

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOC_ID = "travel notes/ünïcode?"


class WsChannel:
    def __init__(self, ws: websockets.ClientConnection, path: str) -> None:
        self._ws = ws
        self._path = path
        self._lock = asyncio.Lock()

    @property
    def path(self) -> str:
        return self._path

    def __aiter__(self) -> WsChannel:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.recv()
        except websockets.ConnectionClosed:
            raise StopAsyncIteration from None

    async def send(self, message: bytes) -> None:
        async with self._lock:
            await self._ws.send(message)

    async def recv(self) -> bytes:
        return bytes(await self._ws.recv())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_for(predicate, what: str, limit_s: float = 10.0) -> None:
    async with asyncio.timeout(limit_s):
        while True:
            if predicate():
                break
            await asyncio.sleep(0.05)
    print(f"ok: {what}")


def paragraph_text(fragment: XmlFragment) -> XmlText | None:
    for child in fragment.children:
        if isinstance(child, XmlElement):
            for grandchild in child.children:
                if isinstance(grandchild, XmlText):
                    return grandchild
    return None


def plain(text: XmlText) -> str:
    return "".join(chunk for chunk, _ in text.diff() if isinstance(chunk, str))


def mark(text: XmlText, name: str, geo_id: str, lat: str, lng: str, color: int) -> None:
    content = plain(text)
    start_char = content.index(name)
    start = len(content[:start_char].encode())
    stop = start + len(name.encode())
    attrs = {
        "geoId": geo_id,
        "placeName": name,
        "lat": lat,
        "lng": lng,
        "colorIndex": color,
        "coordSource": "gazetteer",
    }
    text.format(start, stop, {"geoMark": attrs})


async def check(out: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    harness = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "harness.py"), "--port", str(port)
    )
    try:
        async with AsyncExitStack() as stack:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    await asyncio.sleep(0.1)

            playwright = await stack.enter_async_context(async_playwright())
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            stack.push_async_callback(browser.close)
            page = await browser.new_page(viewport={"width": 1200, "height": 720})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

            from urllib.parse import quote

            await page.goto(f"{base}/doc/{quote(DOC_ID, safe='')}")
            await page.wait_for_selector("#editor .ProseMirror")
            await page.wait_for_function(
                "document.querySelector('#status').textContent === 'connected'"
            )
            print("ok: status connected")
            room = await page.evaluate("window.docagents.provider.url")
            print("  websocket url:", room)

            # the agent: a pycrdt client in the same room
            doc = Doc()
            fragment = doc.get("prosemirror", type=XmlFragment)
            ws_path = f"/parties/document/{quote(DOC_ID, safe='')}"
            ws = await stack.enter_async_context(
                websockets.connect(f"ws://127.0.0.1:{port}{ws_path}")
            )
            channel = WsChannel(ws, ws_path)
            await stack.enter_async_context(Provider(doc, channel))
            awareness = Awareness(doc)
            awareness.set_local_state(
                {"user": {"name": "AI Agent", "color": "#6b4eff"}, "type": "agent"}
            )
            await channel.send(
                create_awareness_message(awareness.encode_awareness_update([doc.client_id]))
            )
            await page.wait_for_selector("#presence li.agent:text-is('AI Agent')")
            print("ok: presence shows AI Agent with class agent")

            editor = page.locator("#editor .ProseMirror")
            await editor.click()
            sentence = "Café stop in Paris, then on to Zürich and back to Paris."
            await page.keyboard.type(sentence)
            await wait_for(
                lambda: (t := paragraph_text(fragment)) is not None and plain(t) == sentence,
                what="python client sees typed text",
            )
            text = paragraph_text(fragment)
            assert text is not None
            with doc.transaction():
                mark(text, "Paris", "geo-paris", "48.85341", "2.3488", 3)
            with doc.transaction():
                mark(text, "Zürich", "geo-zurich", "47.36667", "8.55", 12)
            # second "Paris": same geoId, must be deduplicated in the panel
            content = plain(text)
            second = content.rindex("Paris")
            start = len(content[:second].encode())
            text.format(
                start,
                start + 5,
                {
                    "geoMark": {
                        "geoId": "geo-paris",
                        "placeName": "Paris",
                        "lat": "48.85341",
                        "lng": "2.3488",
                        "colorIndex": 3,
                        "coordSource": "gazetteer",
                    }
                },
            )

            await page.wait_for_selector(
                "span.geo-mark[data-geo-id='geo-zurich'][data-place-name='Zürich']"
            )
            spans = await page.eval_on_selector_all(
                "span.geo-mark[data-geo-id][data-place-name]",
                "els => els.map(e => [e.textContent, e.className, e.getAttribute('aria-label'),"
                " getComputedStyle(e).backgroundColor])",
            )
            print("  marks:", spans)
            assert [s[0] for s in spans] == ["Paris", "Zürich", "Paris"], spans
            assert "geo-color-3" in spans[0][1] and "geo-color-4" in spans[1][1], spans
            assert spans[1][2] == "Zürich (47.36667, 8.55)", spans
            assert spans[0][3] != "rgba(0, 0, 0, 0)", spans
            print("ok: marks rendered with colour classes and labels")

            places = await page.eval_on_selector_all(
                "#places li[data-geo-id]", "els => els.map(e => [e.dataset.geoId, e.textContent])"
            )
            print("  places:", places)
            assert places == [
                ["geo-paris", "Paris — 48.85341, 2.3488"],
                ["geo-zurich", "Zürich — 47.36667, 8.55"],
            ]
            print("ok: places panel deduplicated, in document order")

            # inclusive: false -> typing right after a mark does not extend it
            pos = await page.evaluate(
                """() => { const ed = window.docagents.editor; let end = null;
                    ed.state.doc.descendants((n, p) => { if (end === null && n.isText
                      && n.marks.some(m => m.type.name === 'geoMark'
                                       && m.attrs.geoId === 'geo-zurich'))
                      end = p + n.nodeSize; });
                    ed.commands.setTextSelection(end); ed.commands.focus(); return end; }"""
            )
            await page.keyboard.type("er")
            zurich = await page.text_content("span.geo-mark[data-geo-id='geo-zurich']")
            assert zurich == "Zürich", zurich
            print("ok: typing after a mark does not extend it (pos", pos, ")")
            await wait_for(
                lambda: "Zürichher" not in plain(text) and "Züricher" in plain(text),
                what="edit synced",
            )
            # the Python side still has the mark on exactly "Zürich"
            formatted = [(c, a) for c, a in text.diff() if a and "geoMark" in a]
            assert [c for c, _ in formatted] == ["Paris", "Zürich", "Paris"], formatted
            print("ok: python sees marks on exact spans:", [c for c, _ in formatted])

            # click a place -> selection covers the mark
            await page.click("#places li[data-geo-id='geo-zurich']")
            selected = await page.evaluate(
                "(() => { const s = window.docagents.editor.state; "
                "return s.doc.textBetween(s.selection.from, s.selection.to); })()"
            )
            assert selected == "Zürich", selected
            print("ok: clicking a place selects its mark")

            # a second human: caret with a name, three presence entries
            other_ctx = await browser.new_context(viewport={"width": 1200, "height": 720})
            stack.push_async_callback(other_ctx.close)
            other: Page = await other_ctx.new_page()
            await other.goto(f"{base}/doc/{quote(DOC_ID, safe='')}")
            await other.wait_for_selector("span.geo-mark[data-geo-id='geo-paris']")
            await other.click("#editor .ProseMirror")
            await other.keyboard.press("End")
            await other.keyboard.type(" Lovely.")
            await page.wait_for_selector(".collaboration-carets__label")
            await page.wait_for_function("document.querySelectorAll('#presence li').length === 3")
            presence = await page.eval_on_selector_all(
                "#presence li", "els => els.map(e => [e.textContent, e.className])"
            )
            print("  presence:", presence)
            print("ok: second human shows as caret + presence entry")
            await page.evaluate("window.docagents.editor.commands.blur()")
            await page.hover("span.geo-mark[data-geo-id='geo-zurich']")
            await page.screenshot(path=str(out / "editor.png"))
            print("screenshot:", out / "editor.png")

            # home page lists the document and opens one
            home = await browser.new_page(viewport={"width": 1000, "height": 600})
            await home.goto(base + "/")
            await home.wait_for_selector("#documents li a")
            links = await home.eval_on_selector_all(
                "#documents li a", "els => els.map(e => [e.textContent, e.href])"
            )
            print("  documents:", links)
            assert links[0][0] == DOC_ID, links
            await home.screenshot(path=str(out / "home.png"))
            await home.fill("#open-doc", "another doc")
            await home.press("#open-doc", "Enter")
            await home.wait_for_url("**/doc/another%20doc")
            await home.wait_for_function("window.docagents?.provider?.wsconnected === true")
            print("ok: home lists documents and the open box navigates to", home.url)

            # a permanently refused document: no retry loop, the reason is shown
            refused = await browser.new_page()
            await refused.goto(f"{base}/doc/refused-doc")
            await refused.wait_for_selector("#notice:not([hidden])")
            notice = await refused.text_content("#notice")
            assert "invalid document id" in (notice or ""), notice
            assert await refused.text_content("#status") == "disconnected"
            print("ok: refused document shows:", notice)

            # status goes to disconnected when the server goes away
            harness.terminate()
            await harness.wait()
            await page.wait_for_function(
                "['disconnected','connecting'].includes(document.querySelector('#status').textContent)",
                timeout=15000,
            )
            print("ok: status after server stop:", await page.text_content("#status"))
            await page.screenshot(path=str(out / "editor-disconnected.png"))
            bad = [e for e in errors if "WebSocket" not in e and "ERR_CONNECTION_REFUSED" not in e]
            assert not bad, bad
            print("ok: no page errors")
    finally:
        if harness.returncode is None:
            harness.terminate()
            await harness.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "docagents-editor-shots"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(check(args.out))


if __name__ == "__main__":
    main()
