"""The editor against a docserver that asks for tokens, in a real Chromium.

With a minted token in the URL the editor opens and edits the document; without
one, or with a token for other documents, the page says why instead of staying blank.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from docserver_support import YClient, running_docserver
from playwright.async_api import async_playwright
from pycrdt import XmlElement, XmlFragment, XmlText
from test_browser_editor import CHROMIUM_ARGS, chromium  # noqa: F401 (the fixture)

from docserver.auth import mint_token

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

SECRET = "browser-secret-browser-secret-browser"
ENV = {"DOCSERVER_AUTH": "jwt", "DOCSERVER_JWT_SECRET": SECRET}


def typed(fragment: XmlFragment) -> str:
    for child in fragment.children:
        if isinstance(child, XmlElement):
            for grandchild in child.children:
                if isinstance(grandchild, XmlText):
                    return "".join(c for c, _ in grandchild.diff() if isinstance(c, str))
    return ""


async def test_editor_opens_with_a_token_and_explains_a_refusal(
    tmp_path: Path,
    database_url: str,
    chromium: str,  # noqa: F811
) -> None:
    token = mint_token(
        secret=SECRET, subject="alice", documents=["demo-*"], ttl_s=3600, now=time.time()
    )
    async with (
        running_docserver(tmp_path / "server", database_url, **ENV) as server,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        errors: list[str] = []
        try:
            page = await browser.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{server.http}/doc/demo-1?token={token}")
            await page.wait_for_function(
                "document.querySelector('#status').dataset.status === 'connected'"
            )
            assert "token=" not in page.url  # taken out of the address bar
            async with YClient(
                f"{server.ws_url('demo-1')}?token={token}", name="Py"
            ).connected() as other:
                fragment = other.doc.get("prosemirror", type=XmlFragment)
                await page.click("#editor .ProseMirror")
                await page.keyboard.type("Signed in.")
                await other.wait_for(lambda: typed(fragment) == "Signed in.")

            # another document than the token allows: the reason, not a blank page
            await page.goto(f"{server.http}/doc/other")
            notice = page.locator("#notice")
            await notice.wait_for(state="visible")
            assert "not allowed to open this document" in (await notice.text_content() or "")

            # a fresh tab without any token
            fresh = await browser.new_page()
            await fresh.goto(f"{server.http}/doc/demo-1")
            await fresh.locator("#notice").wait_for(state="visible")
            assert "access token" in (await fresh.locator("#notice").text_content() or "")
            await fresh.goto(f"{server.http}/")
            await fresh.locator("#token-card").wait_for(state="visible")
            await fresh.fill("#token", token)
            await fresh.click("#token-form button")
            await fresh.wait_for_load_state()
            await fresh.goto(f"{server.http}/doc/demo-2")
            await fresh.wait_for_function(
                "document.querySelector('#status').dataset.status === 'connected'"
            )
            assert errors == []
        finally:
            await browser.close()
