"""The instructions' live preview in a real browser: over PAIRWISE_MARKDOWN_PREVIEW_MAX_CHARS it says
so (the server answers 400), and it renders again once the text is short enough."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_preview_says_when_the_instructions_are_over_the_cap(page_for, live_server, make_user, settings):
    settings.PAIRWISE_MARKDOWN_PREVIEW_MAX_CHARS = 50
    page = page_for(make_user("preview-staff", is_staff=True))
    page.goto(f"{live_server.url}/projects/new/")
    page.wait_for_selector("body[data-console-ready]", state="attached")
    preview = page.locator(".md-preview[data-preview-for=id_instructions]")
    page.fill("#id_instructions", "# Short")
    expect(preview.locator("h1")).to_have_text("Short")
    page.fill("#id_instructions", "x" * 51)
    expect(preview).to_have_text("The preview renders at most 50 characters.")
    page.fill("#id_instructions", "# Short again")
    expect(preview.locator("h1")).to_have_text("Short again")
