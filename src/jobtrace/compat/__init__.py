"""Other libraries' APIs, backed by jobtrace: code written for them switches by one import.

- :mod:`jobtrace.compat.osprofiler` — OSProfiler's ``profiler``, ``web``, ``sqlalchemy``,
  ``requests``, ``notifier``, ``initializer`` and ``opts`` modules (``profiler`` and
  ``web`` also importable as ``jobtrace.profiler`` and ``jobtrace.web``).

Each layer keeps its peer's names and behaviour; what differs on purpose is listed in the
module's docstring.
"""
