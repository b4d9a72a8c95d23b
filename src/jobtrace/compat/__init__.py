"""Other libraries' APIs, backed by jobtrace: code written for them switches by one import.

- :mod:`jobtrace.compat.osprofiler` — OSProfiler's ``profiler``, ``web``, ``sqlalchemy``,
  ``requests``, ``notifier``, ``initializer`` and ``opts`` modules (``profiler`` and
  ``web`` also importable as ``jobtrace.profiler`` and ``jobtrace.web``).
- :mod:`jobtrace.compat.phanos` — Phanos's API (0.3.x and 0.0.x) in one namespace.

prometheus_client's constructor signatures need no layer: :mod:`jobtrace.instruments`
takes them directly (see :mod:`jobtrace.instruments._prometheus`).

Each layer keeps its peer's names and behaviour; what differs on purpose is listed in the
module's docstring and in ``docs/compat/``.
"""
