"""The editor page in a real Chromium against a real docserver process.

Debian's chromium (installed by ``scripts/setup --test``) driven by Playwright's
async API; a pycrdt client plays the agent (with the agent credential, so it is
not counted). Screenshots go to ``test-artifacts/browser/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from docserver_support import YClient, activity_rows, running_docserver, wait_for_rows
from playwright.async_api import async_playwright
from pycrdt import XmlElement, XmlFragment, XmlText

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
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
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


def first_text(fragment: XmlFragment) -> XmlText | None:
    for child in fragment.children:
        if isinstance(child, XmlElement):
            for grandchild in child.children:
                if isinstance(grandchild, XmlText):
                    return grandchild
    return None


def plain(text: XmlText | None) -> str:
    if text is None:
        return ""
    return "".join(chunk for chunk, _ in text.diff() if isinstance(chunk, str))


def mark_place(text: XmlText, name: str, attrs: dict[str, Any]) -> None:
    """Format the first ``name`` with geoMark (pycrdt offsets are UTF-8 bytes)."""
    content = plain(text)
    start = len(content[: content.index(name)].encode())
    text.format(start, start + len(name.encode()), {"geoMark": {"placeName": name, **attrs}})


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required: apt-get install -y chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


async def test_editor_presence_typing_marks_and_leaving(
    tmp_path: Path, database_url: str, chromium: str
) -> None:
    async with (
        running_docserver(tmp_path / "server", database_url) as server,
        async_playwright() as playwright,
    ):
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=chromium,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1200, "height": 720},
        )
        errors: list[str] = []
        try:
            page = await context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))

            # open /doc/x -> 'active'
            await page.goto(f"{server.http}/doc/x")
            await page.wait_for_selector("#editor .ProseMirror")
            await page.wait_for_function(
                "document.querySelector('#status').dataset.status === 'connected'"
            )
            await wait_for_rows(database_url, "x", [("active", 1)])

            async with YClient(server.ws_url("x"), agent=True).connected() as agent:
                fragment = agent.doc.get("prosemirror", type=XmlFragment)
                await page.wait_for_selector("#presence li.agent:text-is('AI Agent')")

                # type -> the Python client sees it
                sentence = "We flew from Paris to Zürich, then on to Kraków."
                await page.click("#editor .ProseMirror")
                await page.keyboard.type(sentence)
                await agent.wait_for(lambda: plain(first_text(fragment)) == sentence)

                # the agent marks places -> the browser highlights them
                text = first_text(fragment)
                assert text is not None
                with agent.doc.transaction():
                    mark_place(
                        text,
                        "Zürich",
                        {
                            "geoId": "2657896",
                            "lat": "47.36667",
                            "lng": "8.55",
                            "colorIndex": 1,
                            "coordSource": "gazetteer",
                        },
                    )
                    mark_place(
                        text,
                        "Kraków",
                        {
                            "geoId": "3094802",
                            "lat": "50.06143",
                            "lng": "19.93658",
                            "colorIndex": 2,
                            "coordSource": "gazetteer",
                        },
                    )
                    mark_place(
                        text,
                        "Paris",
                        {
                            "geoId": "2988507",
                            "lat": "48.85341",
                            "lng": "2.3488",
                            "colorIndex": 0,
                            "coordSource": "gazetteer",
                        },
                    )
                await page.wait_for_selector("span.geo-mark[data-place-name='Kraków']")
                spans = await page.eval_on_selector_all(
                    "span.geo-mark",
                    "els => els.map(e => [e.textContent, e.dataset.placeName,"
                    " e.getAttribute('aria-label')])",
                )
                assert spans == [
                    ["Paris", "Paris", "Paris (48.85341, 2.3488)"],
                    ["Zürich", "Zürich", "Zürich (47.36667, 8.55)"],
                    ["Kraków", "Kraków", "Kraków (50.06143, 19.93658)"],
                ]
                places = await page.eval_on_selector_all(
                    "#places li[data-geo-id]", "els => els.map(e => e.dataset.geoId)"
                )
                assert places == ["2988507", "2657896", "3094802"]
                await page.evaluate("window.docagents.editor.commands.blur()")
                await page.hover("span.geo-mark[data-place-name='Zürich']")
                await page.screenshot(path=str(ARTIFACTS / "editor-marks.png"))

                # close the page -> 'idle' (the agent, still connected, does not count)
                await page.close()
                await wait_for_rows(database_url, "x", [("active", 1), ("idle", 0)])

            # the home page lists the document; a refused id explains itself
            home = await context.new_page()
            await home.goto(server.http + "/")
            await home.wait_for_selector("#documents li a:text-is('x')")
            assert await home.text_content("#documents li .badge") == "idle"
            await home.screenshot(path=str(ARTIFACTS / "home.png"))
            await home.goto(f"{server.http}/doc/{quote('a..b', safe='')}")
            await home.wait_for_selector("#notice:not([hidden])")
            notice = await home.text_content("#notice")
            assert notice is not None
            assert "invalid document id: contains '..'" in notice
            assert activity_rows(database_url, "a..b") == []
            assert not errors, errors
        finally:
            await context.close()
