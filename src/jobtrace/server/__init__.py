"""The jobtrace server: a FastAPI app over a store (``jobtrace serve``).

Needs the ``server`` extra: ``pip install 'jobtrace[server]'``.
"""

from __future__ import annotations

from jobtrace.server.app import API_PREFIX, create_app
from jobtrace.server.auth import AuthSettings

__all__ = ["API_PREFIX", "AuthSettings", "create_app"]
