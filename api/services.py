"""How a view reaches the app's :class:`shared.services.Services` (built once in :func:`api.app.create_app`)."""

from __future__ import annotations

from flask import current_app

from shared.services import Services


def services() -> Services:
    """The current app's services (``app.extensions["qbm"]``)."""
    return current_app.extensions["qbm"]
