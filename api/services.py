"""The per-app bundle of collaborators the views use (kept apart from app.py so views can import it)."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import current_app

from shared.config import Config
from shared.jobs import JobStore
from shared.qdrant import QdrantClient
from shared.storage_configs import StorageConfigStore
from workers.dispatch import Enqueue


@dataclass
class Services:
    """Built once per app from the configuration: one Redis pool, one Qdrant client, the stores."""

    config: Config
    redis: redis.Redis
    jobs: JobStore
    storage_configs: StorageConfigStore
    qdrant: QdrantClient
    enqueue: Enqueue


def services() -> Services:
    """The current app's services (``app.extensions["qbm"]``)."""
    return current_app.extensions["qbm"]
