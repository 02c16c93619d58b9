"""WSGI entry point for gunicorn (``gunicorn api.wsgi:app``): the app built from the QBM_* environment."""

from __future__ import annotations

from api.app import create_app
from shared.runtime.config import load_config

app = create_app(load_config())
