"""The ``activeseg`` command: help, version, one-line errors, and the smoke demo end to end, down to
what its annotator sees in a headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from browser import CHROMEDRIVER, CHROMIUM, Chromium, log_in
from PIL import Image
from services import require_program

from activeseg.labelconfig import LABEL_CONFIGS
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LabelStudioServer, free_port, prepare_from_template
from activeseg.projectstate import ProjectDir
from orchestrator.cli import main
from orchestrator.demo.run import ANNOTATOR_EMAIL, server_for

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

EXE = Path(sys.executable).with_name("activeseg")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=600)


def test_help_explains_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for word in ("demo", "version", "labelstudio", "LABEL_STUDIO_API_KEY"):
        assert word in out.stdout
    demo = run("demo", "--help")
    assert demo.returncode == 0 and "--images" in demo.stdout and "--workspace" in demo.stdout


def test_version() -> None:
    out = run("version")
    assert out.returncode == 0
    assert "activeseg 0.1.0" in out.stdout and "torch 2.14.1" in out.stdout and "nnunetv2 2.8.1" in out.stdout


def _one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(list(args)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # progress bars come before it
    assert err.startswith("activeseg: error: ") and "Traceback" not in err
    return err


def test_bad_inputs_fail_in_one_line_before_starting_anything(
    tmp_path: Path, sample_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = ["--workspace", str(tmp_path / "ws")]
    assert "no such folder" in _one_line_error(capsys, "demo", "--images", str(tmp_path / "none"), *ws)

    boxes = tmp_path / "boxes.xml"
    boxes.write_text('<View><Image name="image" value="$image"/><RectangleLabels name="b" toName="image">'
                     '<Label value="Cell"/></RectangleLabels></View>')  # fmt: skip
    assert "no <PolygonLabels> or <BrushLabels>" in _one_line_error(
        capsys, "demo", "--label-config", str(boxes), *ws
    )

    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(sample_dir / "images", unlabelled / "images")
    assert "needs labels/" in _one_line_error(capsys, "demo", "--images", str(unlabelled), *ws)

    bad = tmp_path / "bad"
    shutil.copytree(sample_dir / "images", bad / "images")
    shutil.copytree(sample_dir / "labels", bad / "labels")
    victim = sorted((bad / "images").iterdir())[3]
    victim.write_bytes(b"\x89PNG garbage")
    err = _one_line_error(capsys, "demo", "--images", str(bad), "--test-images", str(sample_dir), *ws)
    assert victim.name in err and "not a readable PNG" in err
    assert not (tmp_path / "ws" / "labelstudio" / "labelstudio.pid").exists()
    study = ["study", "--data", str(sample_dir), "--out", str(tmp_path / "study")]
    assert "--split-depth takes a depth in pixels" in _one_line_error(capsys, *study, "--split-depth", "deep")
    assert not (tmp_path / "study").exists()


@dataclass(frozen=True)
class DemoRun:
    workspace: Path
    port: str
    stdout: str

    def client(self) -> LabelStudioClient:
        server = server_for(self.workspace)
        return LabelStudioClient(server.running_url(), server.login.token)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, ls_template: Path) -> Iterator[DemoRun]:
    """The README's demo with tiny training budgets and ``--keep`` (about 3 minutes), run once for
    the tests that look at its outcome; Label Studio and the backend are stopped afterwards."""
    workspace = tmp_path_factory.mktemp("demo") / "ws"
    prepare_from_template(workspace / "labelstudio", ls_template)  # skip the migrations
    port = str(free_port())
    tiny = ["--minutes", "0", "--finetune-minutes", "0", "--epochs", "1", "--iterations", "4",
            "--finetune-epochs", "1", "--finetune-iterations", "4"]  # fmt: skip
    try:
        out = run("demo", "--workspace", str(workspace), "--port", port, "--keep", *tiny)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        yield DemoRun(workspace, port, out.stdout)
    finally:
        stop = run("labelstudio", "stop", "--workspace", str(workspace))
    assert stop.returncode == 0 and "stopped the demo's ML backend" in stop.stdout
    assert run("labelstudio", "status", "--workspace", str(workspace)).returncode == 3


@pytest.mark.slow
@pytest.mark.labelstudio
def test_demo_runs_the_loop_end_to_end(demo: DemoRun, sample_dir: Path) -> None:
    """Label Studio and the backend start, the simulated annotator works the queue, the webhook
    fine-tunes, the table is printed, and ``--keep`` leaves Label Studio up."""
    assert "18 tasks (18 new), 6 images held out" in demo.stdout
    for arm in ("pseudo-labels (classical)", "nnunet-r0", "nnunet-r1"):
        assert f"| {arm} | " in demo.stdout
    # the serving gate compared the sources on the round's corrections and said what it chose
    assert re.search(r"next round, annotators get: (keeps serving|serves) \S+", demo.stdout)
    assert (demo.workspace / "learning_curve.png").stat().st_size > 0
    assert "annotator@activeseg.local" in demo.stdout
    assert f"http://127.0.0.1:{demo.port}/projects/" in demo.stdout

    client = demo.client()
    (project,) = [p for p in client.sdk.projects.list() if p.title == "activeseg demo"]
    tasks = client.tasks(project.id)
    held_out = {p.stem for p in (sample_dir / "images").iterdir()} - {t["data"]["name"] for t in tasks}
    assert len(tasks) == 18 and len(held_out) == 6
    annotated = [t for t in tasks if t["annotations"]]
    assert len(annotated) == 2 and all(a["completed_by"] != 1 for t in annotated for a in t["annotations"])
    assert client.project(project.id)["model_version"] == "round-2"
    status = run("labelstudio", "status", "--workspace", str(demo.workspace))
    assert status.returncode == 0 and demo.port in status.stdout


DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "img" / "annotator-first-task.png"
UI_TIMEOUT = 120  # seconds for any one page state; the labelling view takes about 10 s on 2 cores


def _outliner_indices(driver: WebDriver, expected: int) -> set[int]:
    """Region numbers in the regions panel. It is a virtual list that renders only the rows in
    view, so it is scrolled with the mouse wheel, half its height a turn (no row is skipped), until
    a few turns bring no new numbers (each turn brings rows: ``expected`` turns are plenty)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    holder = driver.find_element(By.CSS_SELECTOR, ".lsf-outliner-tree .lsf-tree-list-holder")
    step = max(20, driver.execute_script("return arguments[0].clientHeight", holder) // 2)
    seen: set[int] = set()
    idle = 0
    for _ in range(expected + 10):
        rows = driver.find_elements(By.CSS_SELECTOR, ".lsf-outliner-item__index")
        shown = {int(row.text) for row in rows if row.text.strip().isdigit()}
        idle = idle + 1 if shown <= seen else 0
        if idle == 3:
            return seen
        seen |= shown
        ActionChains(driver).scroll_from_origin(ScrollOrigin.from_element(holder), 0, step).perform()
        time.sleep(0.2)
    raise AssertionError(f"the regions panel kept growing past {len(seen)} rows")


def _red_fraction(screenshot: Path, box: dict[str, float]) -> float:
    """Share of the image's pixels tinted by the red regions (label colour #FF0000)."""
    left, top = int(box["left"]), int(box["top"])
    right, bottom = left + int(box["width"]), top + int(box["height"])
    pixels = np.asarray(Image.open(screenshot).convert("RGB").crop((left, top, right, bottom)), dtype=int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return float(np.mean((r > 120) & (r > 1.8 * g) & (r > 1.8 * b)))


def _annotator_view(
    driver: WebDriver, url: str, project: int, password: str, instances: int, screenshot: Path
) -> tuple[str, set[int], dict[str, float]]:
    """Log in as the annotator, press "Label All Tasks": the task shown, its region numbers, and
    where the image is on the screenshot saved."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, UI_TIMEOUT)
    log_in(driver, url, ANNOTATOR_EMAIL, password, UI_TIMEOUT)
    driver.get(f"{url}/projects/{project}/data")
    label_all = (By.XPATH, "//button[normalize-space(.)='Label All Tasks']")
    wait.until(ec.element_to_be_clickable(label_all)).click()
    # The label stream keeps ?labeling=1 in the URL, not the task: its id is in the bottom bar.
    task_id = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".lsf-current-task__task-id")))
    shown_id = driver.execute_script("return arguments[0].firstChild.textContent", task_id)
    image = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "img[alt=image]")))
    loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
    wait.until(lambda d: d.execute_script(loaded, image), "the task's image did not load")
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".lsf-outliner-item__index")))
    indices = _outliner_indices(driver, instances)
    box = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()", image)
    driver.save_screenshot(str(screenshot))
    return shown_id, indices, box


@pytest.mark.slow
@pytest.mark.labelstudio
def test_demo_annotator_sees_the_top_ranked_task_in_chromium(demo: DemoRun, tmp_path: Path) -> None:
    """What an annotator sees: logged in through the web page, "Label All Tasks" opens the top-ranked
    task not yet annotated, with one drawn region per instance of the round's pre-annotation."""
    require_program("chromium", str(CHROMIUM), package="chromium")
    require_program("chromedriver", str(CHROMEDRIVER), package="chromium-driver")
    from selenium.common.exceptions import WebDriverException
    from urllib3.exceptions import HTTPError

    client = demo.client()
    (project,) = [p for p in client.sdk.projects.list() if p.title == "activeseg demo"]
    current = ProjectDir(demo.workspace / "model_dir", project.id).load().current_round
    assert current is not None and client.project(project.id)["model_version"] == current.version
    annotated = {t["id"] for t in client.tasks(project.id) if t["annotations"]}
    top = next(task_id for task_id in current.order if task_id not in annotated)
    (shown,) = [p for p in client.predictions(top) if p["model_version"] == current.version]
    instances = len({r["id"] for r in shown["result"]})
    assert instances == len(shown["result"]) > 0

    password = json.loads((demo.workspace / "annotator-login.json").read_text())["password"]
    url = f"http://127.0.0.1:{demo.port}"
    screenshot = tmp_path / "annotator-first-task.png"
    for attempt in (1, 2):
        browser = Chromium(tmp_path / f"chromedriver-{attempt}.log")
        try:
            with browser as driver:
                view = _annotator_view(driver, url, project.id, password, instances, screenshot)
            break
        except (WebDriverException, HTTPError) as exc:  # not an assertion on what was shown
            # a browser that hung or ran away gets one more go, in a new browser
            why = browser.ran_away or f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            if attempt == 2:
                raise AssertionError(f"the annotator's view did not come up twice; last: {why}") from exc
            print(f"attempt {attempt}: {why}; once more in a new browser")
    assert not browser.processes(), "browser processes outlived the test"
    shown_id, indices, box = view
    assert shown_id == str(top)
    assert indices == set(range(1, instances + 1))
    assert _red_fraction(screenshot, box) > 0.001, "the regions are not drawn on the image"
    if os.environ.get("ACTIVESEG_UPDATE_SCREENSHOTS"):  # refresh the picture the docs show
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, DOCS_SCREENSHOT)


@pytest.mark.slow
def test_serve_runs_the_backend_under_gunicorn(tmp_path: Path) -> None:
    import requests

    port = free_port()
    env = dict(os.environ, MODEL_DIR=str(tmp_path / "md"), LABEL_STUDIO_API_KEY="secret-token-xyz",
               LABEL_STUDIO_URL="http://127.0.0.1:9")  # fmt: skip
    proc = subprocess.Popen([str(EXE), "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "backend did not start"
                time.sleep(0.3)
        assert health.json()["status"] == "UP"
        setup = requests.post(f"http://127.0.0.1:{port}/setup", json={}, timeout=5).json()
        assert setup["model_version"].startswith("classical-")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert "secret-token-xyz" not in output  # secrets never reach the log


LOOP_COMMANDS = {
    "init": "--images",
    "pretrain": "--epochs",
    "rank": "--budget",
    "finetune": "--with-pseudo",
    "status": "--project",
    "export": "--out",
    "watch": "--interval",
    "worker": "--burst",
    "jobs": "rerun",
    "pseudolabels": "--labellers",
}


def test_loop_commands_explain_themselves() -> None:
    for command, flag in LOOP_COMMANDS.items():
        out = run(command, "--help")
        assert out.returncode == 0 and flag in out.stdout, command


def test_loop_commands_fail_in_one_line(
    tmp_path: Path, sample_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "some-token")
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "md"))
    monkeypatch.delenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", raising=False)
    # a strategy that ranks by a pretrained model is refused before anything is scored or fetched
    assert "no model yet: run 'activeseg pretrain' first" in _one_line_error(
        capsys, "rank", "--project", "1", "--strategy", "entropy"
    )
    unreachable = _one_line_error(capsys, "rank", "--project", "1", "--strategy", "typiclust")
    assert "cannot reach Label Studio" in unreachable
    assert "cannot reach Label Studio" in _one_line_error(capsys, "status", "--project", "1")
    assert "cannot reach Label Studio" in _one_line_error(capsys, "pseudolabels", "compare", "--project", "1")
    assert "--files-root" in _one_line_error(capsys, "init", "--images", str(sample_dir))
    brush_config = str(LABEL_CONFIGS["brush"])
    contradiction = _one_line_error(
        capsys, "init", "--images", str(sample_dir), "--files-root", str(tmp_path),
        "--regions", "polygon", "--label-config", brush_config,
    )  # fmt: skip
    assert "--regions polygon contradicts --label-config" in contradiction
    assert "no job" in _one_line_error(capsys, "jobs", "rerun", "nope")
    assert "budget" in _one_line_error(capsys, "rank", "--project", "1", "--budget", "150%")
    assert "--start-minutes must be 0 or more" in _one_line_error(
        capsys, "pretrain", "--project", "1", "--start-minutes", "-1"
    )
    assert main(["jobs"]) == 0
    listed = capsys.readouterr().out.splitlines()  # each failed rank is on record, with its reason
    assert len(listed) == 2 and all("rank" in line and "failed" in line for line in listed)
    assert sorted("cannot reach" in line for line in listed) == [False, True]
    assert sorted("no model yet" in line for line in listed) == [False, True]
    assert "not running" in _one_line_error(capsys, "jobs", "fail", listed[0].split()[0])
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    assert "LABEL_STUDIO_API_KEY" in _one_line_error(capsys, "pretrain", "--project", "1")


@pytest.mark.labelstudio
@pytest.mark.slow
def test_init_prelabel_status_export_watch_through_the_cli(
    label_studio, sample_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    images = tmp_path / "images"
    images.mkdir()
    for src in sorted((sample_dir / "images").glob("*.png"))[:3]:
        shutil.copy(src, images / src.name)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.login.token)
    monkeypatch.setenv("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", str(label_studio.files_root))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "md"))
    assert main(["init", "--images", str(images), "--project", "cli loop"]) == 0
    out = capsys.readouterr().out
    assert "regions: polygon, chosen from 3 sampled images" in out and "3 tasks (3 new)" in out
    assert "images: 3 sampled images look like fluorescence (bright objects" in out
    assert "pseudo-labeller classical (it reads each image's modality" in out
    project = out.split("created project ")[1].split()[0]
    # asked for brush masks, a new project gets them; an existing one keeps its own
    assert main(["init", "--images", str(images), "--project", "cli brush", "--regions", "brush"]) == 0
    out = capsys.readouterr().out
    brush_project = int(out.split("created project ")[1].split()[0])
    client = LabelStudioClient(label_studio.url, label_studio.login.token)
    assert client.region_config(brush_project).kind == "brush" and "regions: brush, as asked" in out
    assert main(["init", "--images", str(images), "--project", "cli brush"]) == 0
    assert f"brush, the label config of existing project {brush_project} (kept)" in capsys.readouterr().out
    assert main(["prelabel", "--project", project]) == 0
    assert main(["status", "--project", project]) == 0
    status = capsys.readouterr().out
    assert "3 tasks, 0 annotated" in status and "no round ranked yet" in status
    assert "pretrain" in _one_line_error(capsys, "finetune", "--project", project)
    assert main(["watch", "--project", project, "--once"]) == 0
    assert "no round has been ranked yet" in capsys.readouterr().out
    assert main(["export", "--project", project, "--out", str(tmp_path / "out")]) == 0
    assert "3 images" in capsys.readouterr().out
    assert len(list((tmp_path / "out" / "labels").glob("*.tif"))) == 3
    assert main(["jobs", "--project", project]) == 0
    listed = capsys.readouterr().out
    assert "finetune" in listed and "failed" in listed and "coreset-check" in listed


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_services_refuse_to_start_without_credentials(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "md"))
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "tok-not-in-messages")
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert "LABEL_STUDIO_URL is not set" in err and "tok-not-in-messages" not in err
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("LABEL_STUDIO_API_KEY")
    assert main([command]) == 2
    assert "LABEL_STUDIO_API_KEY is not set: set it to a Label Studio access token" in capsys.readouterr().err
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "tok")
    monkeypatch.setenv("BASIC_AUTH_USER", "lab")
    monkeypatch.delenv("BASIC_AUTH_PASS", raising=False)
    assert main([command]) == 2
    assert "BASIC_AUTH_PASS" in capsys.readouterr().err
    assert not (tmp_path / "md").exists()  # refused before touching anything


@pytest.mark.labelstudio
@pytest.mark.slow
def test_services_refuse_a_rejected_key_and_wait_for_an_absent_server(
    label_studio: LabelStudioServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "md"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("LABEL_STUDIO_URL", label_studio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "0123456789abcdef-not-the-token")
    for command in ("serve", "worker"):
        assert main([command]) == 2
        err = capsys.readouterr().err
        assert "rejected the API key" in err and "LABEL_STUDIO_API_KEY" in err
        assert "0123456789abcdef" not in err
    # Label Studio not up yet (compose or systemd may start it later): a warning, not a refusal
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    assert main(["worker", "--burst"]) == 0
    captured = capsys.readouterr()
    assert "warning: cannot reach Label Studio at http://127.0.0.1:9" in captured.err
    assert "activeseg worker: jobs from" in captured.out
