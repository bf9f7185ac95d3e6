"""What the editor shows beyond the text: a placeholder, a tooltip, the agent's label.

Real Chromium (Debian's) against a real docserver process; a pycrdt client
plays the agent. The screenshots in ``test-artifacts/browser/`` are headless
renderings: a native ``title`` tooltip would not be in them, the styled one is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from docserver_support import YClient, running_docserver
from playwright.async_api import async_playwright
from pycrdt import XmlFragment
from test_browser_editor import CHROMIUM_ARGS, chromium, first_text, mark_place, plain

pytestmark = [pytest.mark.anyio, pytest.mark.browser]

__all__ = ["chromium"]  # the fixture, shared with test_browser_editor

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"


async def test_placeholder_tooltip_and_agent_label(
    tmp_path: Path, database_url: str, chromium: str
) -> None:
    async with (
        running_docserver(tmp_path / "server", database_url) as server,
        async_playwright() as playwright,
    ):
        browser = await playwright.chromium.launch(
            executable_path=chromium, args=CHROMIUM_ARGS, headless=True
        )
        errors: list[str] = []
        try:
            page = await browser.new_page(viewport={"width": 1200, "height": 720})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{server.http}/doc/hints")
            await page.wait_for_function(
                "document.querySelector('#status').dataset.status === 'connected'"
            )

            # An empty document says what to type.
            placeholder = page.locator("#editor p.is-editor-empty")
            await placeholder.wait_for(state="visible")
            hint = await placeholder.get_attribute("data-placeholder")
            assert hint is not None and "Lisbon" in hint and "places" in hint
            shown = await page.evaluate(
                "getComputedStyle(document.querySelector('#editor p.is-editor-empty'),"
                " '::before').content"
            )
            assert "We flew from Lisbon" in shown
            await page.screenshot(path=str(ARTIFACTS / "editor-placeholder.png"))

            async with YClient(server.ws_url("hints"), agent=True).connected() as agent:
                fragment = agent.doc.get("prosemirror", type=XmlFragment)
                sentence = "We drove from Porto to Madrid."
                await page.click("#editor .ProseMirror")
                await page.keyboard.type(sentence)
                await agent.wait_for(lambda: plain(first_text(fragment)) == sentence)
                assert await placeholder.count() == 0

                text = first_text(fragment)
                assert text is not None
                with agent.doc.transaction():
                    mark_place(
                        text,
                        "Porto",
                        {
                            "geoId": "2735943",
                            "lat": "41.14961",
                            "lng": "-8.61099",
                            "colorIndex": 0,
                            "coordSource": "gazetteer",
                        },
                    )
                with agent.doc.transaction():
                    mark_place(
                        text,
                        "Madrid",
                        {
                            "geoId": "3117735",
                            "lat": "40.4165",
                            "lng": "-3.70256",
                            "colorIndex": 1,
                            "coordSource": "llm",
                        },
                    )
                await page.wait_for_selector("span.geo-mark[data-place-name='Madrid']")

                # The agent's label sits right after the place it marked last.
                label = page.locator("#editor .agent-label-name")
                await label.wait_for(state="visible")
                assert await label.text_content() == "AI Agent"
                follows = await page.evaluate(
                    "document.querySelector('#editor .agent-label')"
                    ".previousSibling?.dataset?.placeName ?? null"
                )
                assert follows == "Madrid"

                # Hovering a place shows the styled tooltip: place, coordinates, source.
                await page.evaluate("window.docagents.editor.commands.blur()")
                await page.hover("span.geo-mark[data-place-name='Madrid']")
                tooltip = page.locator("#geo-tooltip")
                await tooltip.wait_for(state="visible")
                assert await tooltip.locator("strong").text_content() == "Madrid"
                assert "40.4165, -3.70256" in (await tooltip.text_content() or "")
                assert "language model" in (await tooltip.text_content() or "")
                mark_box = await page.locator(
                    "span.geo-mark[data-place-name='Madrid']"
                ).bounding_box()
                tip_box = await tooltip.bounding_box()
                assert mark_box is not None and tip_box is not None
                assert tip_box["y"] >= mark_box["y"] + mark_box["height"]
                assert tip_box["width"] > 0 and tip_box["height"] > 0
                background = await tooltip.evaluate("e => getComputedStyle(e).backgroundColor")
                assert background == "rgb(31, 35, 40)"
                await page.screenshot(path=str(ARTIFACTS / "editor-tooltip.png"))
                # The screenshot holds it: the tooltip's dark pixels are in the image.
                clip = {k: tip_box[k] for k in ("x", "y", "width", "height")}
                png = await page.screenshot(clip=clip)
                assert dark_fraction(png) > 0.5

                await page.hover("#places")
                await tooltip.wait_for(state="hidden")
            assert not errors, errors
        finally:
            await browser.close()


def dark_fraction(png: bytes) -> float:
    """Share of the pixels darker than mid-grey in a PNG (the tooltip is dark)."""
    import io

    from PIL import Image

    histogram = Image.open(io.BytesIO(png)).convert("L").histogram()
    return sum(histogram[:96]) / sum(histogram)
