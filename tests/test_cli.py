"""The ``activeseg`` command: help, version, one-line errors, and the smoke demo end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from activeseg.lsclient import LabelStudioClient
from activeseg.lsserver import free_port, prepare_from_template
from orchestrator.cli import main
from orchestrator.demo import server_for

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
    assert "no <BrushLabels>" in _one_line_error(capsys, "demo", "--label-config", str(boxes), *ws)

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


@pytest.mark.slow
@pytest.mark.labelstudio
def test_demo_runs_the_loop_end_to_end(tmp_path: Path, sample_dir: Path, ls_template: Path) -> None:
    """The README's demo with tiny training budgets: Label Studio and the backend start, the
    simulated annotator works the queue, the webhook fine-tunes, the table is printed."""
    workspace = tmp_path / "ws"
    prepare_from_template(workspace / "labelstudio", ls_template)  # skip the migrations
    port = str(free_port())
    tiny = ["--epochs", "1", "--iterations", "4", "--finetune-epochs", "1", "--finetune-iterations", "4"]
    try:
        out = run("demo", "--workspace", str(workspace), "--port", port, "--keep", *tiny)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "18 tasks (18 new), 6 images held out" in out.stdout
        for arm in ("pseudo-labels (classical)", "nnunet-r0", "nnunet-r1"):
            assert f"| {arm} | " in out.stdout
        assert (workspace / "learning_curve.png").stat().st_size > 0
        assert (
            "annotator@activeseg.local" in out.stdout and f"http://127.0.0.1:{port}/projects/" in out.stdout
        )

        server = server_for(workspace)
        client = LabelStudioClient(server.running_url(), server.login.token)
        (project,) = [p for p in client.sdk.projects.list() if p.title == "activeseg demo"]
        tasks = client.tasks(project.id)
        held_out = {p.stem for p in (sample_dir / "images").iterdir()} - {t["data"]["name"] for t in tasks}
        assert len(tasks) == 18 and len(held_out) == 6
        annotated = [t for t in tasks if t["annotations"]]
        assert len(annotated) == 2 and all(
            a["completed_by"] != 1 for t in annotated for a in t["annotations"]
        )
        assert client.project(project.id)["model_version"] == "round-2"
        status = run("labelstudio", "status", "--workspace", str(workspace))
        assert status.returncode == 0 and port in status.stdout
    finally:
        stop = run("labelstudio", "stop", "--workspace", str(workspace))
    assert stop.returncode == 0 and "stopped the demo's ML backend" in stop.stdout
    assert run("labelstudio", "status", "--workspace", str(workspace)).returncode == 3


@pytest.mark.slow
def test_serve_runs_the_backend_under_gunicorn(tmp_path: Path) -> None:
    import os
    import time

    import requests

    port = free_port()
    env = dict(os.environ, MODEL_DIR=str(tmp_path / "md"), LABEL_STUDIO_API_KEY="secret-token-xyz")
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
    assert "cannot reach Label Studio" in _one_line_error(capsys, "rank", "--project", "1")
    assert "cannot reach Label Studio" in _one_line_error(capsys, "status", "--project", "1")
    assert "--files-root" in _one_line_error(capsys, "init", "--images", str(sample_dir))
    assert "no job" in _one_line_error(capsys, "jobs", "rerun", "nope")
    assert "budget" in _one_line_error(capsys, "rank", "--project", "1", "--budget", "150%")
    assert main(["jobs"]) == 0
    listed = capsys.readouterr().out.splitlines()  # the failed rank is on record, with its reason
    assert len(listed) == 1 and "rank" in listed[0] and "failed" in listed[0] and "cannot reach" in listed[0]
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
    assert "3 tasks (3 new)" in out
    project = out.split("project ")[1].split()[0]
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
