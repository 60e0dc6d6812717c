"""Headless Chromium checks for rendered report pages (Debian's chromium + chromium-driver via Selenium)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,2000")


@dataclass
class PageCheck:
    title: str
    tables: int
    images: int
    broken_images: list[str]
    console_errors: list[str]
    table_texts: list[str]
    images_without_alt: list[str] = field(default_factory=list)  # src prefixes of <img> without alt text
    answer_blocks: int = 0  # elements of class answer-block (the answer that opens a page)
    answer_first: bool = False  # an answer block comes before every figure and data table
    figure_before_table: bool = False  # a figure comes before the first table outside the answer blocks
    screenshot_colours: int = 0  # distinct colours in the screenshot (a blank page has one or two)


def chromium_paths() -> tuple[str | None, str | None]:
    return (shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver"))


_LAYOUT = """
const answers = Array.from(document.querySelectorAll('.answer-block'));
const inAnswer = el => answers.some(a => a.contains(el));
const images = Array.from(document.images).filter(i => !inAnswer(i));
const tables = Array.from(document.querySelectorAll('table')).filter(t => !inAnswer(t));
const before = (a, b) => !!(a.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING);
const first = answers[0];
return [answers.length,
        !!first && images.concat(tables).every(el => before(first, el)),
        images.length > 0 && (tables.length === 0 || before(images[0], tables[0])),
        Array.from(document.images).filter(i => !(i.alt || '').trim()).map(i => i.src.slice(0, 40)),
        document.documentElement.scrollHeight];
"""


def check_page(html_file: Path, screenshot: Path, width: int | None = None) -> PageCheck:
    """Open a local HTML file, count tables and images, list broken images and console errors, screenshot it.

    With ``width`` the window is that wide and as tall as the page (up to 12000 px), so the screenshot shows
    the whole page; without it, the first 1280 x 2000 px.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={screenshot.parent / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(html_file.resolve().as_uri())
        images = driver.execute_script(
            "return Array.from(document.images).map(i => [i.complete && i.naturalWidth > 0, (i.alt || i.src.slice(0, 40))]);")
        tables = driver.execute_script("return Array.from(document.querySelectorAll('table')).map(t => t.innerText);")
        errors = [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]
        answers, answer_first, figure_first, no_alt, height = driver.execute_script(_LAYOUT)
        if width is not None:
            driver.set_window_size(width, min(int(height) + 150, 12000))
        driver.save_screenshot(str(screenshot))
        return PageCheck(title=driver.title, tables=len(tables), images=len(images),
                         broken_images=[name for ok, name in images if not ok], console_errors=errors,
                         table_texts=tables, images_without_alt=no_alt, answer_blocks=int(answers),
                         answer_first=bool(answer_first), figure_before_table=bool(figure_first),
                         screenshot_colours=_colours(screenshot))
    finally:
        driver.quit()


def _colours(png: Path) -> int:
    """Distinct colours of a screenshot (on a 4x subsampled grid): a blank or failed page has one or two."""
    import cv2
    import numpy as np

    image = cv2.imread(str(png), cv2.IMREAD_COLOR)
    if image is None:
        return 0
    sample = image[::4, ::4].reshape(-1, 3)
    return int(len(np.unique(sample, axis=0)))
