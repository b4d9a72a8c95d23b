"""OSProfiler's public modules, backed by jobtrace: a service switches by changing imports.

``profiler`` and ``web`` (also ``jobtrace.profiler`` and ``jobtrace.web``), ``sqlalchemy``,
``requests``, ``notifier``, ``initializer`` and ``opts`` (which needs oslo.config, the
``oslo`` extra), each with OSProfiler 4.4's names and rules. What differs on purpose, and
the mixed-fleet mode for services still on OSProfiler, is in docs/compat/osprofiler.md.
"""
