"""A real headless Chromium for the browser tests and ``benchmarks/annotator_page.py``.

Debian's chromium and chromium-driver (``.ci/run`` installs them). The driver's path is given, so
Selenium never runs selenium-manager, which would try to download one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--force-device-scale-factor=1", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-default-apps", "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
)  # fmt: skip

#: the labelling view of the demo's top task takes about 1 GB; a browser past this has run away
#: (seen with a 1600x1000 window and 200-500 brush regions: an 18 GB renderer that froze the page)
BROWSER_MAX_MB = 6000
PAGE = os.sysconf("SC_PAGE_SIZE")

#: regions of the shown annotation drawn on the Konva stage, or -1 before the editor and its image
#: are up. Label Studio gives a region's Konva node the region's id (a polygon's group, by name) or
#: the id before its "#" (a brush region's layer); a brush region is drawn once the images in its
#: layer have pixels.
DRAWN_JS = """
const a = window.Htx && Htx.annotationStore && Htx.annotationStore.selected;
const img = document.querySelector('img[alt=image]');
if (!a || !window.Konva || !Konva.stages.length || !img || !img.complete || !img.naturalWidth) return -1;
const nodes = new Map();
Konva.stages[0].find(n => n.id() || n.name()).forEach(n => { nodes.set(n.id(), n); nodes.set(n.name(), n); });
const painted = n => n.find('Image').every(i => i.image() && i.image().width > 0);
return a.regionStore.regions.filter(r => {
  const node = nodes.get(r.id) || nodes.get(r.id.split('#')[0]);
  return node && painted(node);
}).length;
"""
NEXT_FRAME_JS = "const done = arguments[arguments.length - 1]; requestAnimationFrame(() => done(true));"


class Chromium:
    """Headless Chromium through chromedriver, in a session of its own: no browser process outlives
    the ``with`` block, and a browser whose processes together hold more than ``max_mb`` resident is
    killed (``ran_away`` says so) instead of hanging the test and starving the machine. While it
    runs, the peak memory of the whole process tree is kept (``peak_pss_mb``, ``peak_rss_mb``). A
    block that fails leaves the page and a screenshot beside ``log`` if the browser still answers."""

    def __init__(
        self, log: Path, max_mb: int = BROWSER_MAX_MB, window: tuple[int, int] = (1000, 700)
    ) -> None:
        self.log, self.max_mb, self.window = log, max_mb, window
        self.ran_away: str | None = None
        self.peak_pss_mb = self.peak_rss_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> WebDriver:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*CHROMIUM_FLAGS, "--window-size={},{}".format(*self.window)):
            options.add_argument(flag)
        service = Service(str(CHROMEDRIVER), log_output=str(self.log), popen_kw={"start_new_session": True})
        self.driver = webdriver.Chrome(service=service, options=options)
        self.driver.command_executor.client_config.timeout = 60  # one command; Selenium retries 3 times
        self.session = os.getsid(service.process.pid)
        threading.Thread(target=self._watch, daemon=True).start()
        return self.driver

    def processes(self) -> dict[int, int]:
        """pid -> resident MB of every process of the browser's session (chromedriver included)."""
        found = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.session and fields[0] != "Z":  # its session, not a zombie
                    found[int(stat.parent.name)] = int(fields[21]) * PAGE >> 20
        return found

    def memory_mb(self) -> tuple[float, float]:
        """(PSS, RSS) summed over the process tree, in MB. PSS counts a page shared by several of
        the browser's processes once in all; the RSS sum counts it in each."""
        pss = rss = 0.0
        for pid in self.processes():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1]) / 1024
                    elif line.startswith("Rss:"):
                        rss += int(line.split()[1]) / 1024
        return pss, rss

    def reset_peak(self) -> None:
        self.peak_pss_mb = self.peak_rss_mb = 0.0

    def _kill(self) -> None:
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            pss, rss = self.memory_mb()
            self.peak_pss_mb, self.peak_rss_mb = max(self.peak_pss_mb, pss), max(self.peak_rss_mb, rss)
            if rss > self.max_mb:
                self.ran_away = f"the browser grew to {rss:.0f} MB (limit {self.max_mb} MB) and was killed"
                self._kill()
                return

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        # a hung page must not hide the failure behind the driver's 60 s timeouts and retries
        self.driver.command_executor.client_config.timeout = 15
        if exc_type is not None and self.ran_away is None:
            try:
                (self.log.parent / "page.html").write_text(self.driver.page_source)
                self.driver.save_screenshot(str(self.log.parent / "failure.png"))
            except Exception as error:
                print(f"could not save the failed page from the browser: {type(error).__name__}: {error}")
        with contextlib.suppress(Exception):
            self.driver.quit()
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            self._kill()
            time.sleep(0.2)


def log_in(driver: WebDriver, url: str, email: str, password: str, timeout: float = 120) -> None:
    """Log in through Label Studio's login form."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/user/login/")
    driver.find_element(By.NAME, "email").send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    refused = "the login was refused"
    WebDriverWait(driver, timeout).until(lambda d: "/user/login" not in d.current_url, refused)


def regions_drawn(driver: WebDriver, regions: int, deadline: float) -> bool:
    """Poll until every region is on the canvas and the frame after is painted (a brush region's
    layer has its pixels before the page has drawn them); False at the deadline or if the page
    stops answering."""
    while time.monotonic() < deadline:
        try:
            if driver.execute_script(DRAWN_JS) >= regions:
                return timed_script(driver, NEXT_FRAME_JS, deadline - time.monotonic()) is not None
        except Exception:  # a frozen page times the call out; a killed browser ends the run
            return False
        time.sleep(0.1)
    return False


def timed_script(driver: WebDriver, script: str, limit: float) -> float | None:
    """Seconds an async script took, or None past ``limit``."""
    driver.set_script_timeout(limit)
    start = time.monotonic()
    try:
        driver.execute_async_script(script)
    except Exception:
        return None
    return time.monotonic() - start
