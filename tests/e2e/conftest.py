"""Real-browser helpers. The `browser` and `page` fixtures live in tests/conftest.py: one
Playwright instance per session (a second sync_playwright() in the same thread is refused)."""

from __future__ import annotations


def login(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
