"""End to end in headless Chromium: staff find a study, patients open their link and scroll the viewer.

Screenshots go to test-artifacts/webui/. No assertion depends on timing: every wait is for a state.
"""

from __future__ import annotations

import zipfile

import pytest

from appliance.config import NodeConfig

from conftest import HOST, wait_until

pytestmark = pytest.mark.browser

ADMIN = ("admin", "admin-password-1")


def wait_images(page) -> None:
    """Wait until every image on the page has loaded.

    Polled from Python: Playwright's wait_for_function evaluates its predicate with
    eval() inside the page, which the site's Content-Security-Policy (rightly) forbids.
    """
    wait_until(lambda: page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)"), timeout=30)


def sign_in(page, url: str, who: tuple[str, str] = ADMIN) -> None:
    page.goto(url + "/staff/login")
    page.get_by_label("User name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/staff/studies")


def test_staff_find_a_study_and_look_at_it(live, browser, shot, node) -> None:
    site = live()
    site.env.site.nodes.add(NodeConfig(node.aet, HOST, node.port, description="This appliance"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, site.url)
    shot(page, "staff-studies")
    page.get_by_label("Patient name").fill("smi")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#result-count")
    assert page.locator("#result-count").inner_text().startswith("1 study")
    page.get_by_role("link", name="SMITH, ANNA").click()
    page.wait_for_selector("#patient-name")
    assert page.locator("#patient-name").inner_text() == "SMITH, ANNA"
    wait_images(page)
    assert page.locator("#token-state").inner_text() == "Works"
    assert page.locator("#print-slip").get_attribute("href").endswith("/slip.pdf")
    shot(page, "staff-study")
    page.locator(".series-tile a").first.click()
    page.wait_for_selector("#viewer[data-loaded='1']")
    shot(page, "staff-viewer", full_page=False)
    page.get_by_role("link", name="Nodes").click()
    page.get_by_role("button", name="Echo").click()
    page.wait_for_selector(".echo-result .online")
    assert page.locator(".echo-result").inner_text() == "Online"
    shot(page, "staff-nodes")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/staff/login")
    page.close()


def test_staff_period_fields_and_delete_confirmation(live, browser, shot) -> None:
    site = live()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, site.url)
    assert not page.locator("#date").is_visible()
    page.get_by_label("Study date").select_option("exact")
    assert page.locator("#date").is_visible() and not page.locator("#from").is_visible()
    page.get_by_label("Study date").select_option("range")
    assert page.locator("#from").is_visible()
    page.goto(f"{site.url}/staff/studies/{site.env.studies['mr']}/delete")
    page.get_by_role("button", name="Delete").click()  # the box is not ticked: the browser refuses
    assert page.url.endswith("/delete")
    page.get_by_label("Yes, delete these images").check()
    shot(page, "staff-delete-confirm")
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url("**/staff/studies")
    assert "Deleted 2 image(s)." in page.locator(".flash").inner_text()
    page.close()


def test_patient_opens_link_and_scrolls_the_viewer(live, browser, shot) -> None:
    site = live()
    token = site.env.token("ct")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{site.url}/token?{token}")
    page.wait_for_selector("#patient-name")
    assert page.url == f"{site.url}/study"  # the token is gone from the address bar
    assert page.locator("#patient-name").inner_text() == "SMITH, ANNA"
    cookie = next(c for c in page.context.cookies() if c["name"] == "appliance_patient")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    wait_images(page)
    shot(page, "patient-study")
    page.locator(".series-tile a").first.click()
    page.wait_for_selector("#viewer[data-loaded='1']")
    assert page.locator("#counter").inner_text() == "Image 1 of 3"
    page.locator("#stage").hover()
    page.mouse.wheel(0, 120)
    page.wait_for_selector("#viewer[data-loaded='2']")
    assert page.locator("#counter").inner_text() == "Image 2 of 3"
    page.locator("#stage").focus()
    page.keyboard.press("End")
    page.wait_for_selector("#viewer[data-loaded='3']")
    page.keyboard.press("ArrowUp")
    page.wait_for_selector("#viewer[data-current='2']")
    page.get_by_label("Contrast").select_option(label="Lung")
    page.wait_for_selector("#viewer[data-loaded='2']")
    assert "Lung" in page.locator("#window-info").inner_text()
    shot(page, "patient-viewer", full_page=False)
    page.get_by_role("link", name="Back to your study").click()
    with page.expect_download() as download_info:
        page.get_by_label("I understand").check()
        page.get_by_role("button", name="Download for a doctor (DICOM)").click()
    download = download_info.value
    assert download.suggested_filename.endswith("-dicom.zip")
    with zipfile.ZipFile(download.path()) as zf:
        assert "DICOMDIR" in zf.namelist()
    page.get_by_role("link", name="Leave").click()
    page.wait_for_selector("text=You have left your images")
    page.goto(f"{site.url}/study")
    page.wait_for_selector("text=Please open the link to your images")
    page.close()


def test_link_from_another_site_still_opens(live, browser) -> None:
    """A link clicked in a mail or chat page (another site) works despite the SameSite=Strict cookie."""
    site = live()
    page = browser.new_page()
    page.set_content(f'<a id="mail" href="{site.url}/token?{site.env.token("mr")}">your images</a>')
    page.click("#mail")
    page.wait_for_selector("#patient-name")
    assert page.locator("#patient-name").inner_text() == "JONES, BOB"
    page.close()


def test_expired_and_wrong_links_look_the_same(live, browser, shot) -> None:
    site = live()
    page = browser.new_page(viewport={"width": 800, "height": 600})
    page.goto(f"{site.url}/token?{site.env.token('expired')}")
    expired = page.locator("main").inner_text()
    shot(page, "patient-expired")
    page.goto(f"{site.url}/token?{'W' * 64}")
    assert page.locator("main").inner_text() == expired
    assert "Please open the link to your images" in expired
    page.close()


def test_wrong_links_are_rate_limited(live, browser, shot) -> None:
    site = live(rate_limit=3)
    page = browser.new_page(viewport={"width": 800, "height": 600})
    for n in range(3):
        response = page.goto(f"{site.url}/token?{'X' * 63}{n}")
        assert response.status == 404
    response = page.goto(f"{site.url}/token?{'X' * 63}9")
    assert response.status == 429
    assert "Too many wrong links" in page.locator("main").inner_text()
    shot(page, "patient-rate-limited")
    # The right link still opens (issue 15: nobody is locked out by wrong links).
    response = page.goto(f"{site.url}/token?{site.env.token('ct')}")
    assert response.status == 200 and page.url.endswith("/study")
    page.close()


def test_patient_page_on_a_phone(live, browser, shot) -> None:
    site = live()
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True, device_scale_factor=2
    )
    page = context.new_page()
    page.goto(f"{site.url}/token?{site.env.token('ct')}")
    wait_images(page)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # nothing wider than the screen
    shot(page, "patient-study-phone")
    context.close()
