"""The report opens in a real browser: headless Chromium (Debian's `chromium` + `chromium-driver`,
installed by .ci/run) loads report.html built from the recorded run, logs no console error, and
every plot image decodes (naturalWidth > 0). The screenshot is kept in tests/artifacts/ (gitignored)."""
import shutil

import pytest
from conftest import REPO
from test_report import RECORDED, copy_run

from r1zero.observe.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver "
                    "(apt-get install -y chromium chromium-driver; .ci/run installs them)")
def test_report_renders_in_headless_chromium(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra: pip install -e '.[test]'")
    from selenium.webdriver.chrome.service import Service

    run = copy_run(RECORDED, tmp_path / "run")
    rep = build_report(run)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(rep.html.resolve().as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.dataset.plot, i.complete, i.naturalWidth, i.naturalHeight])")
        # Every plot of the report is on the page and decoded by the browser.
        assert sorted(name for name, *_ in images) == sorted(rep.plots)
        for name, complete, width, height in images:
            assert complete and width > 0 and height > 0, name
        assert driver.execute_script("return document.querySelectorAll('.sample .seg.answer').length") > 0
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        # Whole page in the screenshot: grow the window to the document's height.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(height, 12000))
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "report.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")

        # The checks can fail: a page with a missing image gives a SEVERE entry and naturalWidth 0.
        broken = tmp_path / "broken.html"
        broken.write_text('<!DOCTYPE html><html><body><img src="missing.png"></body></html>')
        driver.get(broken.as_uri())
        assert driver.execute_script("return document.images[0].naturalWidth") == 0
        assert any(e["level"] == "SEVERE" for e in driver.get_log("browser"))
    finally:
        driver.quit()
