"""A thin client over ``label_studio_sdk.LabelStudio`` (SDK 2.x) for what activeseg does.

Every call goes through :meth:`LabelStudioClient._call`, which turns the SDK's and httpx's
exceptions (401, 404, refused connection, time-out) into one :class:`LabelStudioError` line that
names the URL and says what to check. The API key is never put into a message.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx
import requests
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from activeseg.labelconfig import LabelConfigError, RegionConfig, parse_label_config

T = TypeVar("T")
UNCERTAINTY_SAMPLING = "Uncertainty sampling"
#: the header our project webhook carries the shared secret in (registered by the orchestrator,
#: checked by the ML backend)
SECRET_HEADER = "X-Activeseg-Webhook-Secret"

#: what the backend and the worker need to reach Label Studio, and how to tell the admin
REQUIRED = {
    "LABEL_STUDIO_URL": "the Label Studio server's URL, e.g. http://labelstudio:8080",
    "LABEL_STUDIO_API_KEY": "a Label Studio access token (Account & Settings > Access Token)",
}


class ConfigError(ValueError):
    """A setting a service cannot start with; the message names the variable to set."""


def require_credentials(env: Mapping[str, str] | None = None) -> None:
    """Refuse to start a service that could not reach Label Studio, naming what to set."""
    env = os.environ if env is None else env
    for name, what in REQUIRED.items():
        if not env.get(name):
            raise ConfigError(f"{name} is not set: set it to {what}")
    if bool(env.get("BASIC_AUTH_USER")) != bool(env.get("BASIC_AUTH_PASS")):
        raise ConfigError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")


class LabelStudioError(RuntimeError):
    """A Label Studio call failed; the message is one line meant for the user.

    ``status`` is the HTTP status Label Studio answered with (None: no answer at all).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class LabelStudioAuth:
    """``Authorization`` headers for plain HTTP calls to Label Studio (e.g. image downloads).

    A legacy token is sent as ``Token <key>``. A Personal Access Token (a JWT refresh token) is
    exchanged at ``/api/token/refresh/`` for a short-lived access token, sent as ``Bearer``, and
    renewed before it expires. Thread-safe.
    """

    ACCESS_TTL = 240.0  # Label Studio's access tokens live 300 s

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self._key = api_key
        self._access: tuple[str, float] | None = None
        self._lock = threading.Lock()

    @property
    def is_pat(self) -> bool:
        return self._key.count(".") == 2

    def headers(self) -> dict[str, str]:
        if not self.is_pat:
            return {"Authorization": f"Token {self._key}"}
        with self._lock:
            if self._access is None or self._access[1] < time.monotonic():
                r = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": self._key}, timeout=10)
                if r.status_code != 200:
                    raise LabelStudioError(
                        f"Label Studio at {self.url} rejected the Personal Access Token "
                        f"(HTTP {r.status_code}); check LABEL_STUDIO_API_KEY"
                    )
                self._access = (r.json()["access"], time.monotonic() + self.ACCESS_TTL)
            return {"Authorization": f"Bearer {self._access[0]}"}


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    return obj.model_dump(mode="json", exclude_none=False)


class LabelStudioClient:
    """Talks to one Label Studio server as one user."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        url = url or os.environ.get("LABEL_STUDIO_URL")
        api_key = api_key or os.environ.get("LABEL_STUDIO_API_KEY")
        if not url:
            raise LabelStudioError("no Label Studio URL: set LABEL_STUDIO_URL (e.g. http://localhost:8080)")
        if not api_key:
            raise LabelStudioError(
                "no Label Studio API key: set LABEL_STUDIO_API_KEY to a Personal Access Token "
                "or legacy token (Label Studio: Account & Settings)"
            )
        self.url = url.rstrip("/")
        self._api_key = api_key
        #: the SDK client itself, for calls this wrapper does not cover (its errors are not translated)
        self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)

    @property
    def api_key(self) -> str:
        """The credential, for plain HTTP calls (image downloads); never log it."""
        return self._api_key

    # -- error handling ----------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise LabelStudioError(self._explain(what, exc.status_code, exc.body), exc.status_code) from None
        except httpx.ConnectError:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.url} ({what}): is it running, and is "
                "LABEL_STUDIO_URL right?"
            ) from None
        except httpx.TimeoutException:
            raise LabelStudioError(f"Label Studio at {self.url} did not answer in time ({what})") from None
        except httpx.HTTPError as exc:
            raise LabelStudioError(f"Label Studio at {self.url}: {what} failed: {exc}") from None

    def _explain(self, what: str, status: int | None, body: Any) -> str:
        detail = body.get("detail") if isinstance(body, dict) else None
        detail = f": {detail}" if detail else ""
        problems = body.get("validation_errors") if isinstance(body, dict) else None
        if problems:
            flat = [
                f"{k}: {'; '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in problems.items()
            ]
            return f"Label Studio at {self.url} refused to {what} (HTTP {status}): {'; '.join(flat)}"
        if status == 401:
            return (
                f"Label Studio at {self.url} rejected the API key (401{detail}) while trying to "
                f"{what}; check LABEL_STUDIO_API_KEY (legacy tokens must be enabled in the "
                "organisation, or use a Personal Access Token)"
            )
        if status == 403:
            return f"Label Studio at {self.url} refused to {what} (403{detail}): check the user's role"
        if status == 404:
            return f"Label Studio at {self.url} has no such object ({what}: 404{detail})"
        text = str(body)[:300] if body is not None else ""
        return f"Label Studio at {self.url} could not {what} (HTTP {status}): {text}"

    # -- users and projects ------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The user the key belongs to; the cheapest check that URL and key are right."""
        return _as_dict(self._call("identify the user", self.sdk.users.whoami))

    def project(self, project_id: int) -> dict[str, Any]:
        return _as_dict(self._call(f"read project {project_id}", self.sdk.projects.get, id=project_id))

    def region_config(self, project_id: int) -> RegionConfig:
        """The project's label config, checked to carry instance masks."""
        xml = self.project(project_id)["label_config"]
        try:
            return parse_label_config(xml)
        except LabelConfigError as exc:
            raise LabelStudioError(f"project {project_id} at {self.url}: {exc}") from None

    def find_project(self, title: str) -> int | None:
        """The id of the project with exactly this title, if there is one."""
        pager = self._call("list projects", self.sdk.projects.list, title=title)
        found = [int(p.id) for p in self._call("list projects", list, pager) if p.title == title]
        return found[0] if found else None

    def get_or_create_project(self, title: str, label_config: RegionConfig) -> tuple[int, bool]:
        """(project id, created): an existing project with this exact title is reused, its label
        config kept."""
        existing = self.find_project(title)
        if existing is not None:
            self.region_config(existing)
            return existing, False
        project = self._call(
            f"create project {title!r}",
            self.sdk.projects.create,
            title=title,
            label_config=label_config.xml,
            sampling=UNCERTAINTY_SAMPLING,
        )
        return int(project.id), True

    def ensure_local_storage(self, project_id: int, path: str, title: str = "activeseg images") -> int:
        """A Local Storage on ``path`` (absolute, under Label Studio's document root)."""
        storages = self._call("list local storages", self.sdk.import_storage.local.list, project=project_id)
        for storage in storages:
            if storage.path == path:
                return int(storage.id)
        storage = self._call(
            f"register local storage {path}",
            self.sdk.import_storage.local.create,
            project=project_id,
            path=path,
            title=title,
            use_blob_urls=True,
        )
        return int(storage.id)

    # -- tasks, predictions, annotations -----------------------------------------------------

    def import_tasks(self, project_id: int, tasks: Sequence[dict[str, Any]]) -> list[int]:
        """Import tasks (each ``{"data": {...}}``, predictions allowed); returns the new ids."""
        if not tasks:
            return []
        response = self._call(
            f"import {len(tasks)} tasks",
            self.sdk.projects.import_tasks,
            id=project_id,
            request=list(tasks),
            return_task_ids=True,
        )
        return [int(t) for t in _as_dict(response)["task_ids"]]

    def tasks(self, project_id: int) -> list[dict[str, Any]]:
        """All tasks of a project with their annotations and predictions."""
        pager = self._call("list tasks", self.sdk.tasks.list, project=project_id, fields="all", page_size=100)
        return [_as_dict(t) for t in self._call("list tasks", list, pager)]

    def task(self, task_id: int) -> dict[str, Any]:
        return _as_dict(self._call(f"read task {task_id}", self.sdk.tasks.get, id=task_id))

    def create_prediction(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        model_version: str,
        config: RegionConfig,
        score: float | None = None,
        cluster: int | None = None,
    ) -> int:
        """Post one prediction after checking it against the label config.

        Label Studio stores malformed results without complaint and then cannot show them.
        """
        config.validate_prediction({"result": result, "score": score})
        extra = {} if cluster is None else {"cluster": int(cluster)}
        prediction = self._call(
            f"post a prediction for task {task_id}",
            self.sdk.predictions.create,
            task=task_id,
            result=result,
            model_version=model_version,
            score=score,
            **extra,
        )
        return int(prediction.id)

    def update_prediction(self, prediction_id: int, score: float, cluster: int | None = None) -> None:
        """Re-rank: change a prediction's score (and cluster), keeping its regions."""
        extra = {} if cluster is None else {"cluster": int(cluster)}
        self._call(
            f"update prediction {prediction_id}",
            self.sdk.predictions.update,
            id=prediction_id,
            score=score,
            **extra,
        )

    def delete_prediction(self, prediction_id: int) -> None:
        self._call(f"delete prediction {prediction_id}", self.sdk.predictions.delete, id=prediction_id)

    def update_task_data(self, task_id: int, data: dict[str, Any]) -> None:
        """Replace a task's ``data`` (callers pass the old data with their keys added)."""
        self._call(f"update task {task_id}", self.sdk.tasks.update, id=str(task_id), data=data)

    def update_project(self, project_id: int, **fields: Any) -> None:
        self._call(f"update project {project_id}", self.sdk.projects.update, id=project_id, **fields)

    # -- views, ML backends, webhooks --------------------------------------------------------

    def ensure_view(self, project_id: int, title: str, data: dict[str, Any]) -> int:
        """A shared Data Manager tab with this title, created or updated to ``data``."""
        views = self._call("list Data Manager tabs", self.sdk.views.list, project=project_id)
        for view in views:
            if (view.data or {}).get("title") == title:
                self._call("update a tab", self.sdk.views.update, id=str(view.id), project=project_id,
                           data=dict(data, title=title))  # fmt: skip
                return int(view.id)
        view = self._call(
            "create a tab", self.sdk.views.create, project=project_id, data=dict(data, title=title)
        )
        return int(view.id)

    def connect_ml_backend(
        self, project_id: int, url: str, title: str, basic_auth: tuple[str, str] | None = None
    ) -> int:
        """Connect (once) an ML backend for on-demand predictions; Label Studio checks it answers."""
        for backend in self._call("list ML backends", self.sdk.ml.list, project=project_id):
            if (backend.url or "").rstrip("/") == url.rstrip("/"):
                return int(backend.id)
        auth: dict[str, Any] = {"auth_method": "NONE"}
        if basic_auth is not None:
            auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0],
                    "basic_auth_pass": basic_auth[1]}  # fmt: skip
        backend = self._call(
            f"connect the ML backend at {url}",
            self.sdk.ml.create,
            project=project_id,
            url=url,
            title=title,
            is_interactive=False,
            **auth,
        )
        return int(_as_dict(backend)["id"])

    def ensure_webhook(self, project_id: int, url: str, headers: dict[str, str]) -> int:
        """The project's webhook to ``url`` for every event, with ``headers`` (created or updated)."""
        hooks = self._call("list webhooks", self.sdk.webhooks.list, project=str(project_id))
        for hook in hooks:
            if hook.url == url and hook.project == project_id:
                self._call("update a webhook", self.sdk.webhooks.update, id=int(hook.id), url=url,
                           headers=headers, send_payload=True, send_for_all_actions=True)  # fmt: skip
                return int(hook.id)
        hook = self._call(
            f"register a webhook to {url}",
            self.sdk.webhooks.create,
            url=url,
            project=project_id,
            headers=headers,
            send_payload=True,
            send_for_all_actions=True,
        )
        return int(hook.id)

    def predictions(self, task_id: int) -> list[dict[str, Any]]:
        found = self._call("list predictions", self.sdk.predictions.list, task=task_id)
        return [_as_dict(p) for p in found]

    def annotations(self, task_id: int) -> list[dict[str, Any]]:
        found = self._call("list annotations", self.sdk.annotations.list, id=task_id)
        return [_as_dict(a) for a in found]

    def export_json(self, project_id: int) -> list[dict[str, Any]]:
        """Label Studio's JSON export: every task with its annotations in full.

        The community edition's export lists predictions by id only; read them with
        :meth:`tasks` or :meth:`predictions`.
        """
        exported = self._call("export the project", self.sdk.projects.exports.as_json, project_id)
        return [_as_dict(t) for t in exported]
