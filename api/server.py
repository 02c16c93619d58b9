"""Serve the API through gunicorn (the production server) from inside the ``qbm api`` process."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from shared.runtime.config import Config


class JsonLogger(Logger):
    """Gunicorn's own lines ("Booting worker", "Worker timeout") through QBM's root handler: one JSON object
    per line with secrets scrubbed, like everything else the API process writes (shared/runtime/logs.py)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            log.handlers.clear()
            log.propagate = True


class _Gunicorn(BaseApplication):
    def __init__(self, config: Config, options: dict[str, Any]) -> None:
        self.qbm_config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from api.app import create_app

        return create_app(self.qbm_config)


def serve(config: Config, *, workers: int, threads: int) -> None:
    options = {
        "bind": f"{config.api_host}:{config.api_port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 0,  # snapshot downloads proxied through /download may take hours
        "graceful_timeout": 30,
        "accesslog": None,
        "loglevel": config.log_level.lower(),
        "logger_class": JsonLogger,
    }
    _Gunicorn(config, options).run()
