"""OSProfiler's public modules, backed by jobtrace's tracing.

``from jobtrace.compat.osprofiler import profiler, web`` (or the shorter
``from jobtrace import profiler, web``) replaces ``from osprofiler import profiler, web``.
"""
