"""Getting a task's image: from Label Studio's local-files root on disk, or downloaded from
Label Studio itself with the backend's own credential, and from nowhere else.

A task URL pointing at another host, or a local path escaping the configured root, is refused
(SSRF, path traversal): the task gets an error, the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import requests

from activeseg.lsclient import LabelStudioAuth

log = logging.getLogger(__name__)
LOCAL_FILES_PATH = "/data/local-files/"
MAX_DOWNLOAD_BYTES = 1 << 30


class ImageFetchError(ValueError):
    """A task's image cannot (or may not) be fetched; the message is for the person reading logs."""


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    name: str  # file name with its suffix: decides the decoder, labels error messages


def task_image_url(task: dict[str, Any], image_key: str) -> str:
    """``data.raw`` (the original) when present, else the displayed image."""
    data = task.get("data") or {}
    url = data.get("raw") or data.get(image_key)
    if not url or not isinstance(url, str):
        raise ImageFetchError(f"task {task.get('id')} has neither data.raw nor data.{image_key}")
    return url


class ImageSource:
    def __init__(
        self,
        label_studio_url: str | None,
        api_key: str | None,
        local_files_root: Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base = label_studio_url.rstrip("/") if label_studio_url else None
        self.auth = LabelStudioAuth(self.base, api_key) if self.base and api_key else None
        self.local_root = local_files_root.resolve() if local_files_root else None
        self.timeout = timeout

    def fetch(self, url: str) -> FetchedImage:
        parts = urlsplit(url)
        if parts.path == LOCAL_FILES_PATH and self.local_root is not None and self._is_ours(parts):
            return self._read_local(parts)
        return self._download(url)

    def _is_ours(self, parts: Any) -> bool:
        if not parts.scheme and not parts.netloc:
            return True
        if self.base is None:
            return False
        base = urlsplit(self.base)
        return (parts.scheme, parts.netloc) == (base.scheme, base.netloc)

    def _read_local(self, parts: Any) -> FetchedImage:
        rel = unquote((parse_qs(parts.query).get("d") or [""])[0])
        assert self.local_root is not None
        path = (self.local_root / rel).resolve()
        if not rel or not path.is_relative_to(self.local_root):
            log.warning("refused local path %r: outside %s", rel, self.local_root)
            raise ImageFetchError(f"refused: local file {rel!r} is outside the local-files root")
        try:
            return FetchedImage(path.read_bytes(), path.name)
        except OSError as exc:
            raise ImageFetchError(f"cannot read local file {rel!r}: {exc.strerror}") from None

    def _download(self, url: str) -> FetchedImage:
        if self.base is None:
            raise ImageFetchError("cannot download task images: set LABEL_STUDIO_URL for the ML backend")
        full = urljoin(self.base + "/", url)
        if not self._is_ours(urlsplit(full)):
            log.warning("refused download from %s: not the Label Studio host %s", full, self.base)
            raise ImageFetchError(
                f"refused: {urlsplit(full).netloc} is not the Label Studio host; images are only "
                "downloaded from LABEL_STUDIO_URL"
            )
        if self.auth is None:
            raise ImageFetchError("cannot download task images: set LABEL_STUDIO_API_KEY for the ML backend")
        try:
            r = requests.get(full, headers=self.auth.headers(), timeout=self.timeout, stream=True)
        except requests.RequestException as exc:
            raise ImageFetchError(f"cannot download {url}: {type(exc).__name__}") from None
        with r:
            if r.status_code != 200:
                raise ImageFetchError(f"Label Studio answered HTTP {r.status_code} for {url}")
            data = r.raw.read(MAX_DOWNLOAD_BYTES + 1, decode_content=True)
            if len(data) > MAX_DOWNLOAD_BYTES:
                raise ImageFetchError(f"{url} is larger than {MAX_DOWNLOAD_BYTES >> 20} MB")
            return FetchedImage(data, self._name(url, r.headers.get("Content-Type", "")))

    @staticmethod
    def _name(url: str, content_type: str) -> str:
        parts = urlsplit(url)
        candidate = unquote((parse_qs(parts.query).get("d") or [parts.path])[0])
        name = PurePosixPath(candidate).name or "image"
        if not PurePosixPath(name).suffix:
            name += mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
        return name
