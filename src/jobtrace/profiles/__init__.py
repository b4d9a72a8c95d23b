"""Job profiles: where a job's time and memory went.

A sampler thread per process records wall-time and CPU-time stacks and a timeline of RSS
and CPU use; a memory tracker attributes the job's peak memory to the stacks that
allocated it. Both hand ``profile`` records to the recorder, so profiles reach every store
like any other record; :mod:`jobtrace.profiles.folded` is their data model.
"""
