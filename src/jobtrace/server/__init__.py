"""The jobtrace server: a FastAPI app over a store (``jobtrace serve``).

Needs the ``server`` extra: ``pip install 'jobtrace[server]'``.
"""

from __future__ import annotations

from jobtrace.server.app import API_PREFIX, create_app

__all__ = ["API_PREFIX", "create_app"]
