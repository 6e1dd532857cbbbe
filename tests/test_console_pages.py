"""The status and users pages in a real Chromium, checked against the API: live figures that move, per-source
bitrate and viewers; users added, given a role, changing their own password and deleted."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.browser import launch, new_page, screenshot
from tools.harness.gateway import Gateway


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    yield from new_page(browser, width=1366, height=800, accept_dialogs=True)


def sign_in(page: Page, gw: Gateway, path: str, session: str | None = None, user: str = "admin") -> None:
    page.goto(gw.base + "/healthz")
    page.evaluate(
        "([s, u]) => { localStorage.setItem('h5gate_session', s); localStorage.setItem('h5gate_user', u); }",
        [session or gw.session, user],
    )
    page.goto(gw.base + path)


def test_status_page_shows_live_figures(page: Page, browser: Browser, gateway: Gateway) -> None:
    sign_in(page, gateway, "/console/status")
    page.wait_for_function("() => +document.body.dataset.samples >= 2", timeout=15_000)
    cpu = page.inner_text("#stat-cpu .stat-value")
    assert re.fullmatch(r"\d+ %", cpu), cpu
    assert re.fullmatch(r"\d+ %", page.inner_text("#stat-memory .stat-value"))
    assert re.fullmatch(r"\d+ %", page.inner_text("#stat-disk .stat-value"))
    assert "kbit/s" in page.inner_text("#stat-network .stat-value") or "Mbit/s" in page.inner_text(
        "#stat-network .stat-value"
    )
    assert "free of" in page.inner_text("#stat-disk .stat-note")
    row = page.locator("#source-status-rows tr[data-token=demo]")
    page.wait_for_function(
        "() => { const t = document.querySelector('#source-status-rows tr[data-token=demo] .bitrate');"
        " return t && parseFloat(t.textContent) > 0; }",
        timeout=15_000,
    )
    assert row.locator(".state").inner_text() == "online"
    fps = float(row.locator(".fps").inner_text())
    assert 5 < fps < 60, fps
    # the figures update: more samples, and a viewer on the live page shows up in the demo's count
    n = int(page.evaluate("() => document.body.dataset.samples"))
    viewer = browser.new_context(viewport={"width": 800, "height": 600}).new_page()
    try:
        sign_in(viewer, gateway, "/console/")
        viewer.locator(".tile[data-token=demo]").wait_for(state="visible", timeout=10_000)
        page.wait_for_function(
            "() => +document.querySelector('#source-status-rows tr[data-token=demo] .viewers').textContent >= 1",
            timeout=20_000,
        )
        assert re.fullmatch(r"\d+ / \d+ / \d+", row.locator(".protocols").inner_text())
    finally:
        viewer.context.close()
    assert int(page.evaluate("() => document.body.dataset.samples")) > n
    assert page.evaluate("() => H5gateStatus.history.cpu.length") >= 3
    # the chart is drawn (some pixels are not transparent)
    drawn = page.evaluate(
        "() => { const c = document.querySelector('#stat-cpu canvas');"
        " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"
    )
    assert drawn > 50, drawn
    screenshot(page, "status.png", full_page=True)
    assert page.page_errors == []


def test_users_page_adds_roles_changes_password_and_deletes(page: Page, browser: Browser, gateway: Gateway) -> None:
    gw = gateway
    sign_in(page, gw, "/console/users")
    page.locator("#user-rows tr[data-user=admin]").wait_for(timeout=10_000)
    assert page.inner_text("#me-name") == "admin"
    assert page.locator("#user-rows tr[data-user=admin] button.danger").is_disabled()  # not yourself

    form = page.locator("#user-form")
    form.locator("input[name=user]").fill("alice")
    form.locator("input[name=password]").fill("first-pass")
    page.select_option("#user-form select[name=role]", "Viewer")
    form.locator("button[type=submit]").click()
    row = page.locator("#user-rows tr[data-user=alice]")
    row.wait_for(timeout=10_000)
    users = {u["strUser"]: u for u in gw.ok("GetUserList")["users"]}
    assert users["alice"]["strRoleToken"] == "Viewer"
    form.locator("input[name=user]").fill("alice")
    form.locator("input[name=password]").fill("again-pass")
    form.locator("button[type=submit]").click()
    page.wait_for_function("() => document.getElementById('user-message').textContent.length > 0")
    assert page.inner_text("#user-message") == "user already exists: alice"

    row.locator("select").select_option("Operator")
    page.wait_for_function("() => document.getElementById('notice').textContent === 'alice is now Operator'")
    users = {u["strUser"]: u for u in gw.ok("GetUserList")["users"]}
    assert users["alice"]["strRoleToken"] == "Operator"
    screenshot(page, "users.png", full_page=True)

    # alice signs in on a phone-sized screen and changes her own password
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        alice = context.new_page()
        alice.goto(gw.base + "/console/users")
        alice.wait_for_url(re.compile(r".*/console/login\?next=%2Fconsole%2Fusers$"), timeout=10_000)
        alice.fill("input[name=user]", "alice")
        alice.fill("input[name=password]", "first-pass")
        alice.click("button[type=submit]")
        alice.wait_for_url(gw.base + "/console/users", timeout=10_000)
        alice.wait_for_function("() => document.getElementById('me-role').textContent === '(Operator)'")
        assert alice.locator("#users-card").is_hidden()  # not an administrator
        pw = alice.locator("#password-form")
        pw.locator("input[name=old]").fill("wrong-pass")
        pw.locator("input[name=new]").fill("second-pass")
        pw.locator("input[name=again]").fill("second-pass")
        pw.locator("button[type=submit]").click()
        alice.wait_for_function("() => document.getElementById('password-message').textContent.length > 0")
        assert alice.inner_text("#password-message") == "old password is wrong"
        pw.locator("input[name=old]").fill("first-pass")
        pw.locator("input[name=again]").fill("second-typo")
        pw.locator("button[type=submit]").click()
        assert alice.inner_text("#password-message") == "the two new passwords differ"
        pw.locator("input[name=again]").fill("second-pass")
        pw.locator("button[type=submit]").click()
        alice.wait_for_function("() => document.getElementById('notice').textContent === 'Password changed'")
        screenshot(alice, "users-390.png", full_page=True)
        assert alice.evaluate("() => document.documentElement.scrollWidth") <= 390
    finally:
        context.close()
    assert not gw.get("Login", session=False, user="alice", password=md5("first-pass"))[1]["bStatus"]
    assert gw.get("Login", session=False, user="alice", password=md5("second-pass"))[1]["bStatus"]

    # the administrator deletes her: gone from the list and from logins
    row.locator("button.danger").click()
    row.wait_for(state="detached", timeout=10_000)
    assert "alice" not in {u["strUser"] for u in gw.ok("GetUserList")["users"]}
    assert not gw.get("Login", session=False, user="alice", password=md5("second-pass"))[1]["bStatus"]
    assert page.page_errors == []
