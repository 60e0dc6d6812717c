"""Headless Chromium checks for rendered report pages (Debian's chromium + chromium-driver via Selenium)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
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


def chromium_paths() -> tuple[str | None, str | None]:
    return (shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver"))


def check_page(html_file: Path, screenshot: Path) -> PageCheck:
    """Open a local HTML file, count tables and images, list broken images and console errors, screenshot it."""
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
        driver.save_screenshot(str(screenshot))
        return PageCheck(title=driver.title, tables=len(tables), images=len(images),
                         broken_images=[name for ok, name in images if not ok], console_errors=errors,
                         table_texts=tables)
    finally:
        driver.quit()
