"""The Flask app Label Studio talks to (its ML backend protocol, 1.23).

``create_app()`` is the factory (``gunicorn 'ml_backend.app:create_app()'``). Nothing heavy
happens at import or at app creation: the pseudo-labeller is built on first use.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import asdict
from typing import Any

from flask import Flask, Response, jsonify, request

from activeseg import __version__
from activeseg.jobs import JobError, JobStore, jobs_dir
from activeseg.labellers import ModelLoadError
from activeseg.lsclient import SECRET_HEADER
from activeseg.projectstate import ProjectDir
from activeseg.worker import Worker, notify_rq
from ml_backend.config import BackendConfig
from ml_backend.served import project_id_of
from ml_backend.service import PredictionService

log = logging.getLogger(__name__)
#: webhook actions that may complete a core-set: each queues a "core-set check" job, which
#: confirms through Label Studio's API before anything is trained (webhooks are only hints)
JOB_ACTIONS = frozenset({"START_TRAINING", "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED"})


def create_app(config: BackendConfig | None = None, service: PredictionService | None = None) -> Flask:
    """The app; with ``config.worker == "inprocess"`` it also starts the job worker thread."""
    config = config or BackendConfig.from_env()
    service = service or PredictionService(config)
    jobs = JobStore(jobs_dir(config.model_dir))
    app = Flask("activeseg-ml-backend")
    app.config["service"] = service
    if config.worker == "inprocess":
        worker = Worker(config.model_dir)
        worker.start_thread()
        app.config["worker"] = worker

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
        body = request.get_json(silent=True) or {}
        try:
            version = service.version_for(project_id_of(body.get("project")))
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
        project = project_id_of(body.get("project"))
        results = service.predict(tasks, label_config, context, project)
        return jsonify({"results": results, "model_version": _version_or_none(service, project)})

    @app.post("/webhook")
    def webhook() -> Any:
        body = request.get_json(silent=True) or {}
        action = body.get("action")
        if config.webhook_secret is not None and action != "START_TRAINING":
            # Label Studio's own "Start Training" call cannot carry custom headers (use basic auth)
            sent = request.headers.get(SECRET_HEADER, "")
            if not hmac.compare_digest(sent, config.webhook_secret):
                return jsonify({"error": f"missing or wrong {SECRET_HEADER} header"}), 403
        if action not in JOB_ACTIONS:
            return jsonify({"status": "ignored", "action": action}), 200
        project = project_id_of((body.get("project") or {}).get("id"))
        if project is None:
            return jsonify({"error": "the event names no project"}), 400
        if not ProjectDir(config.model_dir, project).exists():  # not a project activeseg runs
            return jsonify({"status": "ignored", "action": action, "reason": "unknown project"}), 200
        job, created = jobs.submit("coreset-check", project, f"webhook:{action}")
        if created and config.worker == "rq" and config.redis_url:
            try:
                notify_rq(config.redis_url)
            except Exception as exc:  # the job waits in the file queue for the next worker start
                log.error("could not wake an RQ worker for job %s: %s", job.id, exc)
        log.info("%s for project %s: %s job %s", action, project, "queued" if created else "joined", job.id)
        return jsonify({"job": job.id, "status": job.status}), 201

    @app.get("/jobs")
    def list_jobs() -> Any:
        project = request.args.get("project", type=int)
        return jsonify({"jobs": [asdict(j) for j in jobs.list(project)]})

    @app.get("/jobs/<job_id>")
    def get_job(job_id: str) -> Any:
        try:
            return jsonify(asdict(jobs.get(job_id)))
        except JobError as exc:
            return jsonify({"error": str(exc)}), 404

    @app.get("/versions")
    def versions() -> Any:
        """The pseudo-labeller's version and every fine-tuned model served (older ones stay listed)."""
        pseudo = _version_or_none(service)
        return jsonify({"versions": ([pseudo] if pseudo else []) + service.served.all_versions()})

    return app


def _version_or_none(service: PredictionService, project: int | None = None) -> str | None:
    try:
        return service.version_for(project)
    except (ModelLoadError, ValueError):
        return None
