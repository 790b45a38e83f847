"""Durable job records: what the ML backend's webhook hands to the orchestrator's job queue.

Each job is one JSON file ``<dir>/<id>.json`` written atomically, so a record survives a crash
of the web process and can be picked up (or re-run) later. The queue that runs jobs arrives
with the orchestrator; until then records stay ``queued``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from activeseg.fsutil import atomic_write_text


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: str  # e.g. START_TRAINING, ANNOTATION_CREATED
    status: str  # queued | running | done | failed
    created_at: float
    payload: dict[str, Any]


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def submit(self, kind: str, payload: dict[str, Any]) -> JobRecord:
        """Record a job as queued and return it; the id is unique and sortable by time."""
        job = JobRecord(
            id=f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}",
            kind=kind,
            status="queued",
            created_at=time.time(),
            payload=payload,
        )
        atomic_write_text(self.root / f"{job.id}.json", json.dumps(asdict(job)))
        return job

    def list(self) -> list[JobRecord]:
        """All recorded jobs, oldest first."""
        if not self.root.is_dir():
            return []
        return [JobRecord(**json.loads(p.read_text())) for p in sorted(self.root.glob("*.json"))]
