"""The annotator's page on the densest bundled field (375 nuclei as polygons), in a real headless
Chromium: it opens with every region drawn, a cell is deleted and one drawn by hand, and the
submitted annotation comes back as training instances."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from browser import CHROMEDRIVER, CHROMIUM, Chromium, log_in, regions_drawn
from conftest import assert_same_cells, ground_truth_project
from scipy import ndimage
from services import require_program

from activeseg.datasets import read_dataset
from activeseg.imagefetch import ImageSource
from activeseg.imageio import read_label_image
from activeseg.labelconfig import load_label_config
from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import LabelStudioServer
from orchestrator.train.training_data import cases_from_tasks

DENSE = Path(__file__).resolve().parent.parent / "sample_data" / "dsb2018_dense"
DRAW_S = 60  # the benchmark draws this task in about 4 s on 2 cores
STATE_JS = """const store = Htx.annotationStore.selected.regionStore;
return {regions: store.regions.length, selected: store.selection.list.map(r => r.id)};"""
HALF = 8  # the hand-drawn cell: a square of 2 * HALF + 1 pixels a side


@pytest.mark.slow
@pytest.mark.labelstudio
def test_dense_task_edited_in_the_browser_reaches_training(
    label_studio: LabelStudioServer, ls_client: LabelStudioClient, tmp_path: Path
) -> None:
    require_program("chromium", str(CHROMIUM), package="chromium")
    require_program("chromedriver", str(CHROMEDRIVER), package="chromium-driver")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    (sample,) = read_dataset(DENSE)
    truth = read_label_image(sample.label)
    height, width = truth.shape
    assert truth.max() == 375
    config = load_label_config()
    project, tasks = ground_truth_project(ls_client, [sample], "dense field", label_studio.files_root, config)
    task_id = tasks[sample.id]

    # the cell to delete: the largest, clicked at a pixel of its own inside; where to draw: the
    # background pixel farthest from any cell, away from the image's edge
    sizes = np.bincount(truth.ravel())[1:]
    victim = int(np.argmax(sizes)) + 1
    inside = ndimage.distance_transform_edt(truth == victim)
    click_at = np.unravel_index(np.argmax(inside), inside.shape)
    gap = ndimage.distance_transform_edt(truth == 0)
    gap[:40], gap[-40:], gap[:, :40], gap[:, -40:] = 0, 0, 0, 0
    row, col = np.unravel_index(np.argmax(gap), gap.shape)
    assert gap[row, col] > 3 * HALF

    browser = Chromium(tmp_path / "chromedriver.log", window=(1600, 1000))
    with browser as driver:
        log_in(driver, label_studio.url, label_studio.login.username, label_studio.login.password)
        start = time.monotonic()
        driver.get(f"{label_studio.url}/projects/{project}/data?task={task_id}")
        assert regions_drawn(driver, 375, start + DRAW_S), f"375 polygons not drawn in {DRAW_S} s"
        image = driver.execute_script(
            "return document.querySelector('img[alt=image]').getBoundingClientRect().toJSON()"
        )

        def click(r: float, c: float) -> None:  # a pixel of the image, on the screen
            x = image["left"] + (c + 0.5) / width * image["width"]
            y = image["top"] + (r + 0.5) / height * image["height"]
            actions = ActionBuilder(driver)
            actions.pointer_action.move_to_location(round(x), round(y))
            actions.pointer_action.click()
            actions.perform()
            time.sleep(0.3)

        click(*click_at)
        state = driver.execute_script(STATE_JS)
        assert [r.split("#")[0] for r in state["selected"]] == [f"inst-{victim}"], state
        ActionChains(driver).send_keys(Keys.BACKSPACE).perform()
        time.sleep(0.3)
        assert driver.execute_script(STATE_JS) == {"regions": 374, "selected": []}
        ActionChains(driver).send_keys("1").perform()  # the Cell label's hotkey: the polygon tool
        corners = [
            (row - HALF, col - HALF),
            (row - HALF, col + HALF),
            (row + HALF, col + HALF),
            (row + HALF, col - HALF),
        ]
        for corner in [*corners, corners[0]]:  # the first point again closes the polygon
            click(*corner)
        assert driver.execute_script(STATE_JS)["regions"] == 375
        driver.find_element(By.CSS_SELECTOR, "button[aria-label='Submit current annotation']").click()
        deadline = time.monotonic() + 30
        while not ls_client.annotations(task_id) and time.monotonic() < deadline:
            time.sleep(0.5)
    assert not browser.processes(), "browser processes outlived the test"

    (annotation,) = ls_client.annotations(task_id)
    assert len(annotation["result"]) == 375
    report = cases_from_tasks(
        ls_client.tasks(project), config, ImageSource(label_studio.url, label_studio.login.token)
    )
    (case,) = report.cases
    assert case.source == "human" and case.labels.shape == truth.shape
    kept = np.isin(truth, [victim], invert=True) * truth
    drawn = case.labels.copy()
    new_ids = set(np.unique(drawn)) - set(np.unique(kept))
    assert victim not in new_ids and len(new_ids) == 1, new_ids  # the deleted cell is gone, one is new
    (new,) = new_ids
    square = np.zeros_like(truth, dtype=bool)
    square[row - HALF : row + HALF + 1, col - HALF : col + HALF + 1] = True
    iou = (square & (drawn == new)).sum() / (square | (drawn == new)).sum()
    assert iou > 0.8, f"the drawn cell came back with IoU {iou:.2f}"
    drawn[drawn == new] = 0
    assert_same_cells(drawn, kept)  # the 374 untouched cells as the prediction drew them
