"""The app in a real browser: Debian's chromium driven by Playwright (no `playwright install`).

Each tab: upload a photo, run, wait for the result image; an example runs on click; the About tab
links the papers. Screenshots go to test-artifacts/.
Asserts no console errors and that no request leaves localhost. Skipped only outside CI when
chromium is not installed (`.ci/run` installs it).
"""

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def page_url(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run must apt-get install it")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    import app

    with pytest.MonkeyPatch.context() as mp:  # Gradio's folders (uploads, cached examples) out of the repo
        for name in ("GRADIO_TEMP_DIR", "GRADIO_EXAMPLES_CACHE"):
            mp.setenv(name, str(tmp_path_factory.mktemp(name.lower())))
        demo = app.build_demo()
        _, url, _ = demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        yield url
        demo.close()


@pytest.fixture(scope="module")
def browser_page(page_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors, outside = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("request", lambda r: outside.append(r.url)
                if urlparse(r.url).hostname not in {"127.0.0.1", "localhost", None} and not r.url.startswith("data:")
                else None)
        page.goto(page_url)
        page.wait_for_selector("text=dit-translate")
        yield page, errors, outside
        browser.close()


@pytest.mark.parametrize(
    "tab,done",
    [("Paired translation (DiT)", "paired.png"), ("SDEdit vs. correction", "correct.png"),
     ("Guided translation (AGG)", "agg.png")],
)
def test_each_tab_runs_in_a_real_browser(browser_page, tab, done):
    page, errors, outside = browser_page
    page.get_by_role("tab", name=tab).click()
    panel = page.locator("[role=tabpanel]:visible")
    panel.locator("input[type=file]").first.set_input_files("assets/examples/chelsea.jpg")
    page.wait_for_timeout(500)
    panel.get_by_role("button", name="Run").click()
    panel.locator(f'a[download="{done}"]').first.wait_for(timeout=180_000)  # the download link appears last
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / f"{tab.split()[0].lower()}.png"), full_page=True)
    assert panel.locator("table").first.inner_text().count("\n") >= 1  # header + at least one metrics row
    assert "UNTRAINED random weights" in panel.inner_text() or "tiny world" in panel.inner_text()  # honest label
    assert errors == []
    assert outside == []


def test_an_example_runs_on_click(browser_page):
    page, errors, outside = browser_page
    page.reload()
    page.wait_for_selector("text=dit-translate")
    panel = page.locator("[role=tabpanel]:visible")  # the first tab: paired translation
    panel.locator("button.gallery-item").first.click()  # computed on first click, then cached
    panel.locator('a[download="paired.png"]').first.wait_for(timeout=180_000)
    page.wait_for_timeout(1000)
    page.screenshot(path=str(ARTIFACTS / "example.png"), full_page=True)
    assert "CLIP similarity to source" in panel.locator("table").first.inner_text()
    assert errors == []
    assert outside == []


def test_about_tab_links_each_method_to_its_paper(browser_page):
    page, errors, outside = browser_page
    page.get_by_role("tab", name="About / models").click()
    panel = page.locator("[role=tabpanel]:visible")
    for url in ("https://arxiv.org/abs/2108.01073", "https://doi.org/10.1109/JAS.2024.124800",
                "https://arxiv.org/abs/2211.12572", "https://arxiv.org/abs/2306.04396",
                "https://arxiv.org/abs/2505.16001", "https://arxiv.org/abs/2212.09748"):
        assert panel.locator(f'a[href="{url}"]').count() == 1
    assert "Device: cpu" in panel.inner_text() and "Tiny paired DiT" in panel.inner_text()
    page.screenshot(path=str(ARTIFACTS / "about.png"), full_page=True)
    assert errors == []
    assert outside == []
