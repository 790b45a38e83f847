"""What an annotator's page costs: brush regions against polygons at 25-375 cells per task.

Starts a Label Studio 1.23.2 from the tests' template data dir, makes one project per region kind
(``label_config_brush.xml``, ``label_config.xml``) with the same DSB2018 fluorescence training
images (25, 100, 199 and 375 nuclei), and attaches the ground truth as one prediction with one region
per nucleus, exactly as ``activeseg prelabel`` writes them. Each task is then opened in a fresh
headless Chromium (window 1600x1000) as the admin, and measured:

- ``load_s``: from asking for the task's page until the image is loaded, every region of the
  prediction has its shape on the canvas and the next frame is painted (``null`` if that did not
  happen within ``--timeout`` or the browser was killed for passing ``--max-gb``);
- ``peak_pss_gb`` / ``peak_rss_gb``: the browser's whole process tree, sampled every 0.5 s from
  the request to the end of the run (PSS counts a shared page once; the RSS sum counts it per process);
- ``responsive``: once drawn, 5 script calls that wait for the next painted frame all come back
  within 1 s (``frame_s`` is the slowest);
- ``hide_all_s``: one user action, a click on the regions panel's "Hide all regions" until the
  store has every region hidden and the next frame is painted.

``empty_task_pss_gb`` is the same page on a task without regions (the 375-nucleus image).
Run: ``python benchmarks/annotator_page.py [--repeats 2]``; writes
``benchmarks/results/annotator_page.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from browser import CHROMIUM, NEXT_FRAME_JS, Chromium, log_in, regions_drawn, timed_script  # noqa: E402
from conftest import SHARED_DATA, ground_truth_project, ls_template_dir  # noqa: E402

from activeseg.datasets import read_dataset  # noqa: E402
from activeseg.fsutil import atomic_write_text  # noqa: E402
from activeseg.labelconfig import DEFAULT_LABEL_CONFIG, LABEL_CONFIGS, load_label_config  # noqa: E402
from activeseg.lsclient import LabelStudioClient  # noqa: E402
from activeseg.lsserver import LabelStudioServer, ensure_template, prepare_from_template  # noqa: E402
from orchestrator.prelabel.project_setup import init_project  # noqa: E402

WINDOW = (1600, 1000)
#: DSB2018 stage-1 fluorescence training images by nucleus count (the densest of the set: 375)
IMAGES = {
    25: "2dec81a678ddcac2b110acffe82427d857695180bd841e3f9736a554acf832af",
    100: "212b858a66f0d23768b8e3e1357704fc2f4cf4bbe7eed8cd59b5d01031d553e6",
    199: "e23e11414ee645b51081fb202d38b793f0c8ef2940f8228ded384899d21b02c2",
    375: "a102535b0e88374bea4a1cfd9ee7cb3822ff54f4ab2a9845d428ec22f9ee2288",
}
DEFAULT_KIND = load_label_config(DEFAULT_LABEL_CONFIG).kind
RESULTS = REPO / "benchmarks" / "results" / "annotator_page.json"

ALL_HIDDEN_JS = """
const done = arguments[arguments.length - 1];
const regions = () => Htx.annotationStore.selected.regionStore.regions;
const check = () => {
  if (regions().every(r => r.hidden)) requestAnimationFrame(() => done(true));
  else setTimeout(check, 10);
};
check();
"""


def measure(url: str, login: tuple[str, str], project_id: int, task: int, regions: int, args: Any) -> dict:
    """Open one task in a fresh browser and measure it (see the module's docstring)."""
    from selenium.webdriver.common.by import By

    browser = Chromium(args.work / "chromedriver.log", max_mb=int(args.max_gb * 1024), window=WINDOW)
    run: dict[str, Any] = {"load_s": None, "responsive": False, "frame_s": None, "hide_all_s": None}
    with browser as driver:
        driver.command_executor.client_config.timeout = args.timeout
        log_in(driver, url, *login)
        browser.reset_peak()
        start = time.monotonic()
        driver.get(f"{url}/projects/{project_id}/data?task={task}")
        if regions_drawn(driver, regions, start + args.timeout):
            run["load_s"] = round(time.monotonic() - start, 2)
            frames = [timed_script(driver, NEXT_FRAME_JS, 5.0) for _ in range(5)]
            run["responsive"] = all(f is not None and f <= 1.0 for f in frames)
            run["frame_s"] = None if None in frames else round(max(frames), 3)
            if regions:
                start = time.monotonic()
                driver.find_element(By.CSS_SELECTOR, "button[aria-label='Hide all regions']").click()
                hidden = timed_script(driver, ALL_HIDDEN_JS, args.timeout)
                run["hide_all_s"] = None if hidden is None else round(time.monotonic() - start, 2)
        time.sleep(1.0)  # one more memory sample after the last step
    run.update(
        peak_pss_gb=round(browser.peak_pss_mb / 1024, 2),
        peak_rss_gb=round(browser.peak_rss_mb / 1024, 2),
        killed=browser.ran_away is not None,
    )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs of each task (default %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to draw a task (default %(default)s)"
    )
    parser.add_argument(
        "--max-gb", type=float, default=8.0, help="browser RSS sum that ends a run (default 8)"
    )
    parser.add_argument(
        "--kinds", default="brush,polygon", help="region kinds to measure (default %(default)s)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default %(default)s)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    args.work = work = Path(tempfile.mkdtemp(prefix="activeseg-page-"))
    data_dir = work / "ls" / "data"
    prepare_from_template(data_dir, ensure_template(ls_template_dir()))
    server = LabelStudioServer(data_dir, files_root=work / "ls" / "files")
    server.start(progress=True)
    login = (server.login.username, server.login.password)
    runs: list[dict[str, Any]] = []
    try:
        client = LabelStudioClient(server.url, server.login.token)
        by_id = {s.id: s for s in read_dataset(SHARED_DATA / "dsb2018_stage1_train_fluo")}
        samples = [by_id[image] for image in IMAGES.values()]
        densest = by_id[IMAGES[375]]
        empty = init_project(client, [densest], "no regions", server.files_root, load_label_config())
        (empty_task,) = (int(t["id"]) for t in client.tasks(empty.project_id))
        projects = {
            kind: ground_truth_project(
                client,
                samples,
                f"annotator page {kind}",
                server.files_root,
                load_label_config(LABEL_CONFIGS[kind]),
            )
            for kind in kinds
        }
        empty_pss = []
        for repeat in range(args.repeats):
            empty_pss.append(measure(server.url, login, empty.project_id, empty_task, 0, args)["peak_pss_gb"])
            for kind in kinds:
                project_id, tasks = projects[kind]
                for regions, image in IMAGES.items():
                    run = measure(server.url, login, project_id, tasks[image], regions, args)
                    runs.append({"representation": kind, "regions": regions, **run})
                    print(f"run {repeat + 1}: {kind} {regions} regions: {run}", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    version = subprocess.run([str(CHROMIUM), "--version"], capture_output=True, text=True).stdout.strip()
    results = {
        "browser": f"{version}, headless, through chromedriver",
        "window": list(WINDOW),
        "default_representation": DEFAULT_KIND,
        "empty_task_pss_gb": round(max(empty_pss), 2),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")
    print(f"\n{version}, window {WINDOW[0]}x{WINDOW[1]}; empty task PSS {results['empty_task_pss_gb']} GB\n")
    print("| regions | representation | drawn | peak PSS | peak RSS sum | frame | hide all |")
    print("|---|---|---|---|---|---|---|")
    for run in sorted(runs, key=lambda r: (r["regions"], r["representation"])):
        load = (
            "never" + (" (killed)" if run["killed"] else "")
            if run["load_s"] is None
            else f"{run['load_s']} s"
        )
        frame = "-" if run["frame_s"] is None else f"{run['frame_s']} s"
        hide = "-" if run["hide_all_s"] is None else f"{run['hide_all_s']} s"
        print(
            f"| {run['regions']} | {run['representation']} | {load} | {run['peak_pss_gb']} GB "
            f"| {run['peak_rss_gb']} GB | {frame} | {hide} |"
        )


if __name__ == "__main__":
    main()
