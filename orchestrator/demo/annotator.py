"""An annotator account that works Label Studio the way the web UI does: a browser session
(cookie + CSRF token), tasks from the labelling queue's ``next`` endpoint, annotations submitted
as the annotator. Used by tests and the demo's simulated annotator; it never needs an API token.
"""

from __future__ import annotations

from typing import Any

import requests

from activeseg.lsclient import LabelStudioAuth, LabelStudioClient, LabelStudioError


class SessionAnnotator:
    def __init__(self, url: str, email: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.email = email
        self.session = requests.Session()
        self.session.get(f"{self.url}/user/login/", timeout=30)
        r = self.session.post(
            f"{self.url}/user/login/",
            data={"email": email, "password": password, "csrfmiddlewaretoken": self._csrf()},
            allow_redirects=False,
            timeout=30,
        )
        if r.status_code != 302:
            raise LabelStudioError(f"Label Studio at {self.url} refused the login of {email}")

    @classmethod
    def sign_up(cls, admin: LabelStudioClient, email: str, password: str) -> SessionAnnotator:
        """Create the account through the organisation's invite link (as a person would)."""
        auth = LabelStudioAuth(admin.url, admin.api_key)
        invite = requests.get(f"{admin.url}/api/invite", headers=auth.headers(), timeout=30)
        invite.raise_for_status()
        token = invite.json()["token"]
        s = requests.Session()
        s.get(f"{admin.url}/user/signup/?token={token}", timeout=30)
        r = s.post(
            f"{admin.url}/user/signup/?token={token}",
            data={
                "email": email,
                "password": password,
                "csrfmiddlewaretoken": s.cookies["csrftoken"],
                "how_find_us": "",
                "allow_newsletters": "false",
            },
            allow_redirects=False,
            timeout=30,
        )
        if r.status_code != 302:
            raise LabelStudioError(f"Label Studio at {admin.url} refused to sign up {email}")
        return cls(admin.url, email, password)

    def _csrf(self) -> str:
        return self.session.cookies.get("csrftoken", "")

    def _headers(self) -> dict[str, str]:
        return {"X-CSRFToken": self._csrf(), "Referer": f"{self.url}/"}

    def next_task(self, project_id: int) -> dict[str, Any] | None:
        """The task "Label All Tasks" would open next (None when the queue is empty)."""
        r = self.session.get(f"{self.url}/api/projects/{project_id}/next/", timeout=60)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return r.json()

    def submit(self, task_id: int, result: list[dict[str, Any]], skipped: bool = False) -> int:
        """Submit (or, with ``skipped``, skip) a task; returns the annotation id."""
        r = self.session.post(
            f"{self.url}/api/tasks/{task_id}/annotations/",
            json={"result": result, "was_cancelled": skipped, "lead_time": 1.0},
            headers=self._headers(),
            timeout=60,
        )
        r.raise_for_status()
        return int(r.json()["id"])
