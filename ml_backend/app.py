"""The Flask app Label Studio talks to (its ML backend protocol, 1.23).

``create_app()`` is the factory (``gunicorn 'ml_backend.app:create_app()'``). Nothing heavy
happens at import or at app creation: the pseudo-labeller is built on first use.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Flask, Response, jsonify, request

from activeseg import __version__
from activeseg.jobs import JobStore
from ml_backend.config import BackendConfig
from ml_backend.pseudolabelers import ModelLoadError
from ml_backend.service import PredictionService

log = logging.getLogger(__name__)
#: webhook actions that become durable jobs for the orchestrator's queue
JOB_ACTIONS = frozenset({"START_TRAINING", "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"})


def create_app(config: BackendConfig | None = None, service: PredictionService | None = None) -> Flask:
    config = config or BackendConfig.from_env()
    service = service or PredictionService(config)
    jobs = JobStore(config.model_dir / "jobs")
    app = Flask("activeseg-ml-backend")
    app.config["service"] = service

    if config.basic_auth is not None:
        user, password = config.basic_auth

        @app.before_request
        def require_basic_auth() -> Response | None:
            auth = request.authorization
            ok = (
                auth is not None
                and hmac.compare_digest(auth.username or "", user)
                and hmac.compare_digest(auth.password or "", password)
            )
            if ok:
                return None
            resp = jsonify({"error": "authentication required"})
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Basic realm="activeseg"'
            return resp

    @app.get("/health")
    @app.get("/")
    def health() -> Any:
        return jsonify({"status": "UP", "model_class": "activeseg", "version": __version__})

    @app.post("/setup")
    def setup() -> Any:
        try:
            version = service.model_version
        except (ModelLoadError, ValueError) as exc:
            log.error("setup failed: %s", exc)
            return jsonify({"error": str(exc)}), 500
        service.warm_up()
        return jsonify({"model_version": version})

    @app.post("/predict")
    def predict() -> Any:
        body = request.get_json(silent=True) or {}
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            return jsonify({"error": "body must be JSON with a 'tasks' list"}), 400
        label_config = body.get("label_config") or ""
        context = body.get("context") or (body.get("params") or {}).get("context")
        results = service.predict(tasks, label_config, context)
        return jsonify({"results": results, "model_version": _version_or_none(service)})

    @app.post("/webhook")
    def webhook() -> Any:
        body = request.get_json(silent=True) or {}
        action = body.get("action")
        if action not in JOB_ACTIONS:
            return jsonify({"status": "ignored", "action": action}), 200
        job = jobs.submit(action, body)
        log.info("recorded %s as job %s", action, job.id)
        return jsonify({"job": job.id, "status": "queued"}), 201

    @app.get("/versions")
    def versions() -> Any:
        version = _version_or_none(service)
        return jsonify({"versions": [version] if version else []})

    return app


def _version_or_none(service: PredictionService) -> str | None:
    try:
        return service.model_version
    except (ModelLoadError, ValueError):
        return None
