#!/usr/bin/env bash
# Set up activeseg on a fresh machine; safe to re-run (it only installs what is missing or changed).
#
#   .venv      activeseg with torch 2.14.1, torchvision 0.29.1, nnU-Net 2.8.1, segment-anything 1.0,
#              label-studio-sdk 2.1.2 and the dev tools: pytest, ruff, selenium for the browser test
#              (about 6 GB: torch brings CUDA libraries, unused on CPU-only machines but needed for
#              torch to import)
#   .venv-ls   Label Studio 1.23.2 on its own (about 1 GB): it brings Django 5, numpy 2.2 and
#              pandas 3, which must not share an environment with torch and nnU-Net
#
# PYTHON selects the interpreter (default: python3.11, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
step() { printf '\n== %s\n' "$*" >&2; }
started=$SECONDS

step "activeseg environment (.venv) with $($PYTHON --version)"
[[ -x .venv/bin/python ]] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet -e '.[dev]'

step "Label Studio environment (.venv-ls)"
[[ -x .venv-ls/bin/python ]] || "$PYTHON" -m venv .venv-ls
.venv-ls/bin/python -m pip install --quiet -r requirements-labelstudio.txt

step "done in $((SECONDS - started)) s: $(du -sh .venv | cut -f1) in .venv, $(du -sh .venv-ls | cut -f1) in .venv-ls"
