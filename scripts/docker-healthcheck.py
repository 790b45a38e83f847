"""Health checks of the activeseg containers (the Dockerfile's HEALTHCHECK and docker-compose.yml).

    python scripts/docker-healthcheck.py backend   GET /health of ``activeseg serve``; sends
                                                   BASIC_AUTH_USER/BASIC_AUTH_PASS when both are set
    python scripts/docker-healthcheck.py worker    MODEL_DIR's job folder is writable and, with
                                                   REDIS_URL, Redis answers

Exit status 0 when healthy, 1 otherwise, with one line saying why. Only the standard library and
redis-py (an activeseg dependency); never prints a credential or a URL that may carry one.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

TIMEOUT_S = 5


def check_backend() -> str:
    url = os.environ.get("ACTIVESEG_HEALTH_URL", "http://127.0.0.1:9090/health")
    request = urllib.request.Request(url)
    user, password = os.environ.get("BASIC_AUTH_USER"), os.environ.get("BASIC_AUTH_PASS")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = response.read(2000).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"unhealthy: /health answered HTTP {exc.code}") from None
    except OSError as exc:
        raise SystemExit(f"unhealthy: no answer from /health ({type(exc).__name__})") from None
    if '"UP"' not in body:
        raise SystemExit("unhealthy: /health did not report status UP")
    return "backend UP"


def check_worker() -> str:
    jobs = Path(os.environ.get("MODEL_DIR", "model_dir")) / "jobs"
    try:
        jobs.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=jobs, prefix=".health."):
            pass
    except OSError as exc:
        raise SystemExit(f"unhealthy: cannot write to {jobs} ({exc.strerror})") from None
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        return f"worker: {jobs} writable (file queue, no Redis)"
    from redis import Redis
    from redis.exceptions import RedisError

    try:
        Redis.from_url(redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S).ping()
    except RedisError as exc:
        raise SystemExit(f"unhealthy: Redis does not answer ({type(exc).__name__})") from None
    return f"worker: {jobs} writable, Redis answers"


def main(argv: list[str]) -> int:
    checks = {"backend": check_backend, "worker": check_worker}
    if len(argv) != 1 or argv[0] not in checks:
        print(f"usage: docker-healthcheck.py {'|'.join(checks)}", file=sys.stderr)
        return 2
    print(checks[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
