"""Run the backend under gunicorn (threads share one pseudo-labeller per worker process)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app, self._options = app, options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self._app


def serve(app: Flask, host: str, port: int, threads: int = 4, timeout: int = 120) -> None:
    """Serve ``app`` with one gunicorn worker process and ``threads`` threads until stopped.

    One process keeps one copy of the model in memory; threads overlap image downloads and
    let ``/health`` answer while a prediction runs.
    """
    options = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "timeout": timeout,
        "accesslog": "-",
        # no gunicornc socket: its default path ($HOME/.gunicorn) would be shared by every
        # backend of the same user on the host
        "control_socket_disable": True,
    }
    _Gunicorn(app, options).run()
