# syntax=docker/dockerfile:1
# One image for the activeseg ML backend (`activeseg serve`, the default command) and the job
# worker (`activeseg worker`); docker-compose.yml runs both from it (docs/admin.md).
#
# Installed the way scripts/setup.sh installs .venv: Python 3.11, torch and torchvision at the
# versions pyproject.toml pins, then the package itself, editable from /app (the default label
# config and the bundled sample are read from the source tree). tests/test_deploy.py checks that
# the pins below equal pyproject.toml's.
#
#   docker build -t activeseg:0.1.0 .                                     torch CPU wheels (default)
#   docker build --build-arg TORCH_INDEX_URL= -t activeseg:0.1.0-cuda .   PyPI's torch wheels, which
#                                                                         bring CUDA 13 (as setup.sh)
#
# No secret is built in: credentials come from the environment at run time (.env.example).

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-trixie

# Keep equal to pyproject.toml's pins.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# Where torch and torchvision come from: PyTorch's CPU-only wheel index (about 2 GB smaller),
# or, when empty, PyPI, whose Linux wheels bring the CUDA libraries.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The user the services run as; it owns /data/models and /data/images in fresh volumes.
ARG APP_UID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    MODEL_DIR=/data/models \
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/data/images

RUN groupadd --gid "${APP_UID}" activeseg \
    && useradd --uid "${APP_UID}" --gid activeseg --create-home --shell /usr/sbin/nologin activeseg \
    && mkdir -p /app /data/models /data/images \
    && chown activeseg:activeseg /data/models /data/images

WORKDIR /app

# torch first, from the chosen index; `pip install -e .` below then finds the pins satisfied
# (a local version such as 2.14.1+cpu matches ==2.14.1) and leaves them alone.
RUN if [ -n "${TORCH_INDEX_URL}" ]; then \
        pip install --index-url "${TORCH_INDEX_URL}" \
            "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"; \
    else \
        pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"; \
    fi

COPY pyproject.toml README.md label_config.xml label_config_brush.xml ./
COPY activeseg ./activeseg
COPY ml_backend ./ml_backend
COPY orchestrator ./orchestrator
COPY scripts/docker-healthcheck.py ./scripts/docker-healthcheck.py
RUN pip install -e . \
    && python -c "import torch, torchvision; \
assert torch.__version__.split('+')[0] == '${TORCH_VERSION}', torch.__version__; \
assert torchvision.__version__.split('+')[0] == '${TORCHVISION_VERSION}', torchvision.__version__" \
    && activeseg version

USER activeseg
EXPOSE 9090

# The backend's /health (with basic auth when BASIC_AUTH_USER/PASS are set); docker-compose.yml
# gives the worker its own check.
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "/app/scripts/docker-healthcheck.py", "backend"]

CMD ["activeseg", "serve", "--host", "0.0.0.0", "--port", "9090"]
