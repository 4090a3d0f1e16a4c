"""Issue 20, items 7 and 11 in headless Chromium: viewer keys, swipe and pinch, the viewer's size, compact
headers, the admin navigation on one line, series named by their description and one way of showing names.

Screenshots go to test-artifacts/webui/. No assertion depends on timing: every wait is for a state.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

import dicomdata
from conftest import wait_until

pytestmark = pytest.mark.browser

ADMIN = ("admin", "admin-password-1")
DESKTOP = {"width": 1366, "height": 768}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}


def sign_in(page: Any, url: str, who: tuple[str, str] = ADMIN) -> None:
    page.goto(url + "/staff/login")
    page.get_by_label("User name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/staff/studies")


def box(page: Any, selector: str) -> dict[str, float]:
    """The element's rectangle in the window (CSS pixels)."""
    return page.evaluate(
        f"(() => {{ const r = document.querySelector({selector!r}).getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, height: r.height, width: r.width}; })()"
    )


def open_first_series(page: Any) -> None:
    page.locator(".series-tile a").first.click()
    page.wait_for_selector("#viewer[data-loaded='1']")


def test_staff_viewer_keys_without_a_click_and_the_image_fits_the_screen(live: Any, browser: Any, shot: Any) -> None:
    site = live()
    page = browser.new_page(viewport=DESKTOP)
    sign_in(page, site.url)
    page.goto(f"{site.url}/staff/studies/{site.env.studies['ct']}")
    open_first_series(page)
    # The whole image is on the screen, below the page's header, without scrolling.
    image = box(page, "#canvas")
    assert image["height"] > 200 and image["bottom"] <= DESKTOP["height"], image
    shot(page, "staff-viewer-1366x768", full_page=False)
    # Arrow keys work at once: nothing was clicked or focused.
    assert page.evaluate("document.activeElement === document.body")
    page.keyboard.press("ArrowDown")
    page.wait_for_selector("#viewer[data-loaded='2']")
    page.keyboard.press("End")
    page.wait_for_selector("#viewer[data-loaded='3']")
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("#viewer[data-current='2']")
    # ... but not while a field has the keys: the contrast list takes ArrowDown, the image stays.
    page.get_by_label("Contrast").focus()
    page.keyboard.press("ArrowDown")
    page.wait_for_selector("#viewer[data-loaded='2']")
    assert page.locator("#counter").inner_text() == "Image 2 of 3"
    assert page.get_by_label("Contrast").input_value() == "40/400"
    page.close()


def touch(cdp: Any, kind: str, *points: tuple[float, float]) -> None:
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y} for x, y in points]})


def swipe(cdp: Any, start: tuple[float, float], dx: float) -> None:
    touch(cdp, "touchStart", start)
    for step in range(1, 6):
        touch(cdp, "touchMove", (start[0] + dx * step / 5, start[1]))
    touch(cdp, "touchEnd")


def test_phone_viewer_swipe_pinch_and_a_compact_header(live: Any, browser: Any, shot: Any) -> None:
    site = live()
    context = browser.new_context(**PHONE)
    page = context.new_page()
    page.goto(f"{site.url}/token?{site.env.token('ct')}")
    open_first_series(page)
    shot(page, "patient-viewer-phone", full_page=False)
    assert box(page, "header.topbar")["height"] <= 64
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    image = box(page, "#canvas")
    assert image["bottom"] <= 844, image
    assert page.locator(".hint-touch").is_visible() and not page.locator(".hint-desk").is_visible()

    cdp = context.new_cdp_session(page)
    stage = box(page, "#stage")
    middle = (195.0, stage["top"] + stage["height"] / 2)
    swipe(cdp, (300.0, middle[1]), -200)  # finger to the left: next image
    page.wait_for_selector("#viewer[data-loaded='2']")
    swipe(cdp, (90.0, middle[1]), 200)  # to the right: back
    page.wait_for_selector("#viewer[data-loaded='1']")

    width = box(page, "#canvas")["width"]
    touch(cdp, "touchStart", (middle[0] - 30, middle[1]), (middle[0] + 30, middle[1]))
    for step in range(1, 6):
        touch(cdp, "touchMove", (middle[0] - 30 - 20 * step, middle[1]), (middle[0] + 30 + 20 * step, middle[1]))
    touch(cdp, "touchEnd")
    wait_until(lambda: float(page.get_attribute("#viewer", "data-zoom") or 1) >= 2)
    assert box(page, "#canvas")["width"] >= 2 * width
    assert page.locator("#counter").inner_text() == "Image 1 of 3"  # a pinch is no swipe
    shot(page, "patient-viewer-phone-zoomed", full_page=False)
    context.close()


@pytest.mark.parametrize("width", [1280, 1366])
def test_admin_navigation_stays_on_one_line(live: Any, browser: Any, shot: Any, width: int) -> None:
    site = live()
    page = browser.new_page(viewport={"width": width, "height": 800})
    sign_in(page, site.url)
    shot(page, f"staff-nav-{width}", full_page=False)
    tops = page.evaluate(
        "[...document.querySelectorAll('.topbar .brand, .nav > a, .nav > form')]"
        ".map(e => Math.round(e.getBoundingClientRect().top + e.getBoundingClientRect().height / 2))"
    )
    assert len(tops) >= 15  # brand, 13 pages, the user, Sign out
    assert max(tops) - min(tops) <= 2, tops  # every item on the same line
    assert box(page, "header.topbar")["height"] <= 64
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    page.close()


def test_one_name_and_series_descriptions_on_staff_and_patient_pages(
    live: Any, browser: Any, shot: Any, store: Any
) -> None:
    site = live()
    env = site.env
    knee = dicomdata.study(
        "PID900",
        "Müller^Jürgen",
        ("MR", "MR"),
        2,
        charset="ISO_IR 192",
        study_description="MR KNEE",
        study_date=dt.date.today().strftime("%Y%m%d"),
    )
    for inst in knee:
        inst.extra = {"SeriesDescription": "KNEE SAG PD" if inst.series_number == 1 else ""}
    store(env.app, knee)
    study = knee[0].study_uid
    page = browser.new_page(viewport=DESKTOP)
    sign_in(page, site.url)
    page.get_by_label("Patient name").fill("müller")
    page.get_by_role("button", name="Search").click()
    page.wait_for_selector("#result-count")
    assert page.get_by_role("link", name="MÜLLER, Jürgen").count() == 1  # the staff list
    page.get_by_role("link", name="MÜLLER, Jürgen").click()
    page.wait_for_selector("#patient-name")
    assert page.locator("#patient-name").inner_text() == "MÜLLER, Jürgen"  # the staff study page
    shot(page, "staff-study-name")
    page.locator(".series-tile a").first.click()
    page.wait_for_selector("#viewer[data-loaded='1']")
    assert page.locator(".series-strip a").all_inner_texts() == ["KNEE SAG PD", "MR 2"]
    page.close()

    patient = browser.new_page(viewport=DESKTOP)
    patient.goto(f"{site.url}/token?{env.site.tokens.token(study)}")
    patient.wait_for_selector("#patient-name")
    assert patient.locator("#patient-name").inner_text() == "MÜLLER, Jürgen"  # the patient page
    open_first_series(patient)
    assert patient.locator(".series-strip a").all_inner_texts() == ["KNEE SAG PD", "MR 2"]
    shot(patient, "patient-viewer-series-names", full_page=False)
    patient.close()
