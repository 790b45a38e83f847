"""The deployment files: docker-compose.yml (+ docker-compose.gpu.yml), Dockerfile, .env.example.

No Docker engine runs where activeseg is developed and tested, so the compose files are checked
by a real compose parser, Debian's ``docker-compose`` (``.ci/run`` installs it): ``config``
interpolates, merges and validates them against the compose schema. Invariants that the parser
does not know (health checks, pinned versions, documented variables) are checked on top.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from services import require_program

import activeseg

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_GPU = REPO / "docker-compose.gpu.yml"
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"
HEALTHCHECK = REPO / "scripts" / "docker-healthcheck.py"
LS_VERSION = "1.23.2"


@pytest.fixture(scope="session")
def docker_compose() -> str:
    return require_program("docker-compose", package="docker-compose")


#: ${VAR}, ${VAR:-default}, ${VAR:?message}, ... as compose interpolates them ($$ escapes a $)
VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_variables(*files: Path) -> dict[str, set[str]]:
    """Every variable the compose files interpolate, with the operators used on it."""
    found: dict[str, set[str]] = {}
    for path in files:
        for name, op, _ in VARIABLE.findall(path.read_text()):
            found.setdefault(name, set()).add(op)
    return found


def required_variables() -> list[str]:
    """Variables compose refuses to start without (``${VAR:?message}``)."""
    return sorted(n for n, ops in compose_variables(COMPOSE, COMPOSE_GPU).items() if ":?" in ops)


def env_example() -> dict[str, str]:
    """The uncommented ``NAME=value`` lines of .env.example."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            pairs[name.strip()] = value.strip()
    return pairs


def filled_env() -> dict[str, str]:
    """.env.example with every required value filled in, as an admin would."""
    env = env_example()
    for name in required_variables():
        env[name] = "admin@lab.example" if name == "LABEL_STUDIO_USERNAME" else f"test-{name.lower()}-0123"
    return env


def run_compose(
    compose: str, tmp_path: Path, env: dict[str, str], *files: Path
) -> subprocess.CompletedProcess[str]:
    """``docker-compose --env-file ENV -f FILE... config`` with a clean process environment."""
    env_file = tmp_path / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    interpolated = set(compose_variables(COMPOSE, COMPOSE_GPU))
    process_env = {
        k: v
        for k, v in os.environ.items()
        if k not in interpolated and not k.startswith(("COMPOSE_", "DOCKER_"))
    }
    files_args = [arg for f in files for arg in ("-f", str(f))]
    return subprocess.run(
        [compose, "--env-file", str(env_file), *files_args, "config"],
        cwd=REPO,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def config(docker_compose: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """docker-compose.yml as compose resolves it with a complete .env."""
    out = run_compose(docker_compose, tmp_path_factory.mktemp("compose"), filled_env(), COMPOSE)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def gpu_config(docker_compose: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("compose-gpu")
    out = run_compose(docker_compose, folder, filled_env(), COMPOSE, COMPOSE_GPU)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


# -- compose, through the real parser ----------------------------------------------------------


def test_compose_defines_the_services_volumes_and_dependencies(config: dict) -> None:
    services = config["services"]
    assert set(services) == {"postgres", "redis", "labelstudio", "backend", "worker"}
    assert set(config["volumes"]) >= {"labelstudio-data", "models", "images"}
    for name, service in services.items():
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"service {name} has no health check"
        for dependency, how in (service.get("depends_on") or {}).items():
            assert how["condition"] == "service_healthy", f"{name} -> {dependency}: {how}"
    assert set(services["labelstudio"]["depends_on"]) == {"postgres"}
    assert set(services["backend"]["depends_on"]) == set(services["worker"]["depends_on"]) == {"redis"}

    ls = services["labelstudio"]
    assert ls["image"] == f"heartexlabs/label-studio:{LS_VERSION}"
    env = ls["environment"]
    assert env["DJANGO_DB"] == "default" and env["POSTGRE_HOST"] == "postgres"
    assert {"POSTGRE_NAME", "POSTGRE_USER", "POSTGRE_PASSWORD", "POSTGRE_PORT"} <= set(env)
    assert env["POSTGRE_PASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    root = env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"]

    def mounts(service: str) -> dict[str, tuple[str, bool]]:
        """target -> (named volume, read-only), parsed from compose's long or short syntax"""
        found = {}
        for volume in services[service]["volumes"]:
            if isinstance(volume, dict):
                found[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
            else:
                source, target, *mode = volume.split(":")
                found[target] = (source, "ro" in mode)
        return found

    # Local Storage paths registered by `activeseg init` (in the worker) are absolute paths, so the
    # images volume sits at the same place in Label Studio, the backend and the worker.
    assert mounts("labelstudio")[root] == ("images", True)
    assert mounts("backend")[root] == ("images", True)
    assert mounts("worker")[root] == ("images", False)
    assert mounts("labelstudio")["/label-studio/data"] == ("labelstudio-data", False)
    for name in ("backend", "worker"):
        service = services[name]
        assert service["image"] == f"activeseg:{activeseg.__version__}"
        assert service["pull_policy"] == "build" and service["build"]["context"] == str(REPO)
        assert service["environment"]["MODEL_DIR"] == "/data/models"
        assert mounts(name)["/data/models"] == ("models", False)
        assert service["environment"]["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == root
        assert service["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert services["backend"]["command"][:2] == ["activeseg", "serve"]
    assert services["worker"]["command"] == ["activeseg", "worker"]
    assert "deploy" not in services["worker"], "the GPU belongs in docker-compose.gpu.yml"


def test_gpu_override_reserves_a_gpu_for_the_worker_only(config: dict, gpu_config: dict) -> None:
    worker = gpu_config["services"]["worker"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert worker["build"]["args"]["TORCH_INDEX_URL"] == ""  # PyPI's CUDA wheels
    assert worker["image"] != config["services"]["worker"]["image"]
    assert "deploy" not in gpu_config["services"]["backend"]
    # everything else is docker-compose.yml's
    base = config["services"]["worker"]
    for key in ("command", "environment", "healthcheck", "depends_on", "hostname", "shm_size"):
        assert worker[key] == base[key], key
    assert sorted(map(str, worker["volumes"])) == sorted(map(str, base["volumes"]))  # merged in any order


@pytest.mark.parametrize("missing", required_variables())
def test_compose_refuses_to_start_without_a_required_variable(
    docker_compose: str, tmp_path: Path, missing: str
) -> None:
    env = filled_env()
    env[missing] = ""
    out = run_compose(docker_compose, tmp_path, env, COMPOSE)
    assert out.returncode != 0
    assert f"set {missing} in .env" in out.stderr, out.stderr
    assert not any(v in out.stderr for k, v in env.items() if k in required_variables() and v), (
        "a secret was printed"
    )


def test_the_example_env_alone_does_not_start(docker_compose: str, tmp_path: Path) -> None:
    """Copying .env.example without filling it in fails, naming what to set."""
    out = run_compose(docker_compose, tmp_path, env_example(), COMPOSE)
    assert out.returncode != 0 and re.search(r"set [A-Z_]+ in \.env", out.stderr), out.stderr


def test_required_variables_are_the_credentials() -> None:
    assert set(required_variables()) == {
        "POSTGRES_PASSWORD",
        "LABEL_STUDIO_USERNAME",
        "LABEL_STUDIO_PASSWORD",
        "LABEL_STUDIO_API_KEY",
        "ACTIVESEG_WEBHOOK_SECRET",
    }
    text = COMPOSE.read_text()
    for name in required_variables():  # the message says which variable to set, every time
        for op, message in re.findall(rf"\${{{name}(:?[-?])([^}}]*)\}}", text):
            assert op == ":?" and message == f"set {name} in .env (see .env.example)"


# -- the files among themselves ----------------------------------------------------------------


def test_env_example_documents_every_variable() -> None:
    example = env_example()
    used = set(compose_variables(COMPOSE, COMPOSE_GPU))
    assert used <= set(example), f"missing from .env.example: {sorted(used - set(example))}"
    assert set(example) <= used, f"unused in the compose files: {sorted(set(example) - used)}"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.split("=", 1)[0] in example:  # each setting sits under a comment explaining it
            block = lines[:i]
            while block and not block[-1].startswith("#"):
                assert block[-1].split("=", 1)[0] in example, block[-1]
                block.pop()
            assert block, f"{line!r} has no comment above it"
    for name in required_variables():
        assert example[name] == "", f"{name} must be empty in .env.example (so compose asks for it)"
        assert re.search(rf"# REQUIRED\..*\n(#.*\n|\w+=.*\n)*{name}=", ENV_EXAMPLE.read_text())


def test_dockerfile_pins_torch_like_pyproject_and_setup() -> None:
    dockerfile = DOCKERFILE.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S*)$", dockerfile, re.MULTILINE))
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    pins = dict(
        re.fullmatch(r"([\w-]+)==([\w.]+)", dep).groups()  # type: ignore[union-attr]
        for dep in pyproject["project"]["dependencies"]
        if "==" in dep
    )
    assert args["TORCH_VERSION"] == pins["torch"]
    assert args["TORCHVISION_VERSION"] == pins["torchvision"]
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert f"torch {pins['torch']}, torchvision {pins['torchvision']}" in setup
    assert "pip install --quiet -e '.[dev]'" in setup  # the Dockerfile installs the same way
    assert re.search(r"^RUN pip install -e \.", dockerfile, re.MULTILINE)
    # Python: the base image's version satisfies requires-python, like setup.sh's python3.11
    assert args["PYTHON_VERSION"] == "3.11" and pyproject["project"]["requires-python"] == ">=3.11"
    assert "FROM python:${PYTHON_VERSION}-slim" in dockerfile
    # a non-root user, the backend's health check, and no credential in the image
    assert re.search(r"^USER activeseg$", dockerfile, re.MULTILINE)
    assert "HEALTHCHECK" in dockerfile and "docker-healthcheck.py" in dockerfile
    for name in re.findall(r"^(?:ARG|ENV)\s+(\w+)", dockerfile, re.MULTILINE):
        assert not re.search(r"KEY|PASS|SECRET|TOKEN", name), name


def test_label_studio_version_matches_the_local_environment() -> None:
    assert (REPO / "requirements-labelstudio.txt").read_text().split() == [f"label-studio=={LS_VERSION}"]
    assert f"image: heartexlabs/label-studio:{LS_VERSION}" in COMPOSE.read_text()


def test_dockerignore_keeps_the_context_small_and_secret_free() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".venv-ls", "benchmarks", ".env", "model_dir"} <= set(ignored)
    assert ".env" in (REPO / ".gitignore").read_text().split()


# -- the health check script, against the real backend app --------------------------------------


def healthcheck(mode: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BASIC_AUTH", "REDIS_URL"))}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), mode],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[str]:
    """The ML backend app with basic auth on a free port of 127.0.0.1; yields its /health URL."""
    from werkzeug.serving import make_server

    from ml_backend.app import create_app
    from ml_backend.config import BackendConfig

    config = replace(
        BackendConfig(model_dir=tmp_path / "model_dir", worker="off"), basic_auth=("ls", "pw-s3cret")
    )
    server = make_server("127.0.0.1", 0, create_app(config))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/health"
    finally:
        server.shutdown()
        thread.join(10)


def test_backend_healthcheck_uses_basic_auth_and_prints_no_secret(backend: str) -> None:
    ok = healthcheck(
        "backend", {"ACTIVESEG_HEALTH_URL": backend, "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw-s3cret"}
    )
    assert ok.returncode == 0 and "UP" in ok.stdout, ok.stderr
    wrong = healthcheck(
        "backend", {"ACTIVESEG_HEALTH_URL": backend, "BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "nope-x"}
    )
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr
    assert "nope-x" not in wrong.stdout + wrong.stderr
    down = healthcheck("backend", {"ACTIVESEG_HEALTH_URL": "http://127.0.0.1:9/health"})
    assert down.returncode == 1 and "no answer" in down.stderr
    token = base64.b64encode(b"ls:pw-s3cret").decode()
    assert all(token not in out.stdout + out.stderr for out in (ok, wrong, down))


def test_worker_healthcheck(tmp_path: Path) -> None:
    ok = healthcheck("worker", {"MODEL_DIR": str(tmp_path / "models")})
    assert ok.returncode == 0 and (tmp_path / "models" / "jobs").is_dir(), ok.stderr
    assert not list((tmp_path / "models" / "jobs").iterdir())  # its probe file is gone
    # port 9 (discard) on loopback: nothing listens, so the connection is refused at once
    no_redis = healthcheck(
        "worker", {"MODEL_DIR": str(tmp_path / "models"), "REDIS_URL": "redis://:r3dis-pw@127.0.0.1:9/0"}
    )
    assert no_redis.returncode == 1 and "Redis does not answer" in no_redis.stderr
    assert "r3dis-pw" not in no_redis.stdout + no_redis.stderr
    assert healthcheck("nonsense", {}).returncode == 2
