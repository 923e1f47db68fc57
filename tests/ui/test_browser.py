"""/ui in Chromium: sign in (a wrong key, a form without its CSRF token), watch a batch's
progress bar reach 100% live, open a picture, read why a job failed and retry it,
cancel a batch; dark and light, desktop and phone. A screenshot of each page is kept
in .artifacts/ui/."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.async_api import Browser, BrowserContext, Page, expect

from service.worker import running_worker
from tests.conftest import Caller
from tests.ui.conftest import WAIT_MS, Stack

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}


async def submit(stack: Stack, caller: Caller, body: dict[str, object]) -> str:
    async with httpx.AsyncClient(base_url=stack.url, headers=caller.headers) as api:
        response = await api.post("/v1/batches", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def signed_in(browser: Browser, stack: Stack, caller: Caller, **options: object) -> Page:
    context: BrowserContext = await browser.new_context(**options)  # type: ignore[arg-type]
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    await page.goto(f"{stack.url}/ui")
    await expect(page).to_have_url(re.compile(r"/ui/login$"))
    await page.fill("#api_key", caller.key)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/ui/batches$"))
    # The URL changes when the navigation commits, before the new document is parsed.
    await page.wait_for_load_state("domcontentloaded")
    return page


async def shot(page: Page, artifacts: Path, name: str) -> None:
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


async def test_sign_in_refuses_wrong_keys_and_forged_forms_then_cancel_on_a_phone(
    browser: Browser, stack: Stack, caller: Caller, artifacts: Path
) -> None:
    for scheme in ("light", "dark"):
        context = await browser.new_context(color_scheme=scheme, viewport=DESKTOP)  # type: ignore[arg-type]
        page = await context.new_page()
        await page.goto(f"{stack.url}/ui/login")
        await shot(page, artifacts, f"login-{scheme}")
        await context.close()

    context = await browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    await page.goto(f"{stack.url}/ui/login")
    await page.fill("#api_key", "dk_not-a-real-key")
    await page.click("button[type=submit]")
    await expect(page.locator("#login-error")).to_contain_text("not valid")
    await shot(page, artifacts, "login-wrong-key")

    # The same form without its token: 403, and no session.
    await page.fill("#api_key", caller.key)
    await page.evaluate("document.querySelector('input[name=csrf]').remove()")
    async with page.expect_navigation() as navigation:
        await page.click("button[type=submit]")
    response = await navigation.value
    assert response is not None
    assert response.status == 403
    await expect(page.locator("h1")).to_have_text("Form expired")
    assert not [c for c in await context.cookies() if c["name"] == "darkroom_session"]

    await page.goto(f"{stack.url}/ui/login")
    await page.fill("#api_key", caller.key)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(re.compile(r"/ui/batches$"))
    cookies = {c["name"]: c for c in await context.cookies()}
    session = cookies["darkroom_session"]
    assert session["httpOnly"]
    assert session["sameSite"] == "Lax"
    assert caller.key not in session["value"]
    assert caller.key not in page.url
    assert caller.key not in await page.content()
    assert await page.evaluate("document.cookie") == ""  # nothing readable by scripts

    await page.click("text=Sign out")
    await expect(page).to_have_url(re.compile(r"/ui/login\?notice=signed_out$"))
    await page.goto(f"{stack.url}/ui/batches")
    await expect(page).to_have_url(re.compile(r"/ui/login$"))
    await context.close()

    # On a phone, in dark mode: the list and a batch fit the screen; cancel a batch.
    body = {
        "name": "Weekly socials",
        "defaults": {"model": "gpt-sim", "width": 1024, "height": 1024},
    }
    batch_id = await submit(stack, caller, {**body, "jobs": [{"prompt": "kite"}] * 4})
    page = await signed_in(
        browser,
        stack,
        caller,
        viewport=PHONE,
        color_scheme="dark",
        is_mobile=True,
        has_touch=True,
    )
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 19, 22)"  # prefers-color-scheme: dark
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]  # nothing overflows sideways
    await shot(page, artifacts, "batches-phone-dark")

    await page.click(f'a[href="/ui/batches/{batch_id}"]')
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#cancel")
    await expect(page.locator(".notice")).to_contain_text("being cancelled")
    await expect(page.locator("#batch [data-status-label]")).to_have_text("cancelled")
    await expect(page.locator(".tile.status-cancelled")).to_have_count(4)
    await expect(page.locator("#cancel")).to_be_disabled()
    await shot(page, artifacts, "batch-phone-dark")
    await page.click("#theme-toggle")
    await expect(page.locator("html")).to_have_attribute("data-theme", "light")
    await shot(page, artifacts, "batch-phone-light")


async def test_progress_reaches_100_live_then_a_picture_opens_and_a_failure_is_retried(
    browser: Browser, stack: Stack, caller: Caller, artifacts: Path
) -> None:
    jobs = [{"prompt": f"harbour at dawn {n}", "output_name": f"sku-{n}"} for n in range(5)]
    jobs.append({"prompt": "a FORBIDDEN harbour", "output_name": "sku-refused"})
    body = {"name": "Harbour SKUs", "defaults": {"model": "gpt-sim", "width": 1024, "height": 1024}}
    batch_id = await submit(stack, caller, {**body, "jobs": jobs})

    page = await signed_in(browser, stack, caller, viewport=DESKTOP)
    row = page.locator(f'[data-batch="{batch_id}"]')
    await expect(row.locator("[data-pct]")).to_have_text("0%")
    await page.click(f'a[href="/ui/batches/{batch_id}"]')
    head = page.locator("#batch")
    await expect(head.locator("[data-pct]")).to_have_text("0%")
    await expect(page.locator(".tile")).to_have_count(6)

    # Nothing ran until now: the page moves by itself, from the event stream.
    async with running_worker(stack.state):
        await expect(head.locator("[data-pct]")).to_have_text("100%", timeout=3 * WAIT_MS)
    await expect(head.locator("[data-status-label]")).to_have_text("partially failed")
    await expect(head.locator('[data-count="succeeded"]')).to_have_text("5")
    await expect(page.locator(".tile.status-succeeded img")).to_have_count(5)
    refused = page.locator(".tile.status-failed")
    await expect(refused).to_have_count(1)
    await expect(refused.locator(".reason")).to_contain_text("content_policy")
    await expect(page.locator("#retry")).to_be_enabled()
    await shot(page, artifacts, "batch-light")

    # A picture opens large.
    await page.locator(".tile.status-succeeded a.shot").first.click()
    viewer = page.locator("#viewer")
    await expect(viewer).to_be_visible()
    loaded = await page.evaluate(
        "() => { const i = document.getElementById('viewer-image');"
        " return i.complete && i.naturalWidth; }"
    )
    await expect(page.locator("#viewer-image")).to_have_attribute("src", re.compile("/output$"))
    assert loaded in (0, 1024)  # loading or loaded; the next line waits for it
    await page.wait_for_function("document.getElementById('viewer-image').naturalWidth === 1024")
    await page.screenshot(
        path=str(artifacts / "picture-open.png")
    )  # the viewport: the viewer covers it
    await page.keyboard.press("Escape")
    await expect(viewer).to_be_hidden()

    # The provider stops refusing; the failed job is retried from the page.
    await stack.sim.configure(content_policy_word="NEVER-IN-A-PROMPT")
    await page.click("#retry")
    await expect(page.locator(".notice")).to_contain_text("back in line")
    async with running_worker(stack.state):
        await expect(head.locator("[data-status-label]")).to_have_text(
            "succeeded", timeout=3 * WAIT_MS
        )
    await expect(head.locator("[data-pct]")).to_have_text("100%")
    await expect(page.locator(".tile.status-succeeded")).to_have_count(6)
    await expect(page.locator("#retry")).to_be_disabled()

    await page.goto(f"{stack.url}/ui/batches")
    await expect(row.locator("[data-pct]")).to_have_text("100%")
    await shot(page, artifacts, "batches-light")
    await page.click("#theme-toggle")
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(18, 19, 22)"
    await shot(page, artifacts, "batches-dark")
    await page.goto(f"{stack.url}/ui/batches/{batch_id}")  # the choice is kept
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    await shot(page, artifacts, "batch-dark")
