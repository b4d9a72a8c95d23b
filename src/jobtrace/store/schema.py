"""The store's tables: the whole data model of DESIGN.md §2, on SQLite and PostgreSQL alike.

Times are epoch seconds as doubles (spans: integer nanoseconds). Metric-like values are
split into a finite ``value`` column and a ``special`` column holding ``nan``/``inf``/
``-inf``, because SQLite silently stores NaN as NULL. This module is the source of truth
for queries; the migrations under ``migrations/versions`` build the same tables and a test
keeps the two in step.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from jobtrace import model

metadata = sa.MetaData()

#: JSON documents: JSONB on PostgreSQL (indexable), TEXT holding JSON on SQLite.
JSONDoc = sa.JSON().with_variant(JSONB(), "postgresql")

ID = sa.String(128)
NAME = sa.String(512)

experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("description", sa.Text),
    sa.Column("tags", JSONDoc),
    sa.Column("created_at", sa.Double, nullable=False),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("name", NAME),
    sa.Column("experiment", sa.String(256)),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("start_time", sa.Double, nullable=False),
    sa.Column("end_time", sa.Double),
    sa.Column("duration", sa.Double),
    sa.Column("peak_memory_kb", sa.BigInteger),
    sa.Column("cpu_user", sa.Double),
    sa.Column("cpu_sys", sa.Double),
    sa.Column("exit_code", sa.Integer),
    sa.Column("error_type", sa.String(256)),
    sa.Column("error_message", sa.Text),
    sa.Column("host", sa.String(256)),
    sa.Column("pid", sa.Integer),
    sa.Column("argv", JSONDoc),
    sa.Column("tags", JSONDoc),
    sa.Column("params", JSONDoc),
    sa.Column("last_heartbeat", sa.Double),
    sa.Column("heartbeat_interval", sa.Double),
    sa.Column("report_dir", sa.Text),
    # {kind: count} of the job's records the recorder dropped (spool full); NULL: none.
    sa.Column("records_dropped", JSONDoc),
    # The formatted traceback of a job that failed with an exception (its end kept).
    sa.Column("traceback", sa.Text),
    sa.Index("ix_jobs_start_time", "start_time"),
    sa.Index("ix_jobs_experiment_start_time", "experiment", "start_time"),
    sa.Index("ix_jobs_status", "status"),
)

metrics = sa.Table(
    "metrics",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("step", sa.BigInteger, primary_key=True),
    sa.Column("value", sa.Double),
    sa.Column("special", sa.String(8)),
    sa.Column("timestamp", sa.Double, nullable=False),
)

#: The highest step of each (job, name), maintained on write so "latest" reads are one lookup.
metric_latest = sa.Table(
    "metric_latest",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("step", sa.BigInteger, nullable=False),
    sa.Column("value", sa.Double),
    sa.Column("special", sa.String(8)),
    sa.Column("timestamp", sa.Double, nullable=False),
)

spans = sa.Table(
    "spans",
    metadata,
    sa.Column("trace_id", sa.String(32), primary_key=True),
    sa.Column("span_id", sa.String(16), primary_key=True),
    sa.Column("parent_id", sa.String(16)),
    sa.Column("name", NAME, nullable=False),
    sa.Column("start_ns", sa.BigInteger, nullable=False),
    sa.Column("duration_ns", sa.BigInteger, nullable=False),
    sa.Column("info", JSONDoc),
    sa.Column("error_type", sa.String(256)),
    sa.Column("error_message", sa.Text),
    sa.Column("job_id", ID),
    sa.Column("host", sa.String(256)),
    sa.Column("pid", sa.Integer),
    sa.Column("thread", sa.String(256)),
    # The process's service name (jobtrace.tracing.spans.service()); NULL from old clients.
    sa.Column("service", sa.String(256)),
    # No index on start time alone: trace ids begin with their creation time, so the
    # primary key already lists recent traces in order (a search walks it newest first and
    # stops at the page's last match), and every index costs SQLite write throughput.
    sa.Index("ix_spans_job_id", "job_id"),
    # Trace search by service (Jaeger's search form starts from one): a service's traces,
    # newest first, straight from the index, the walk stopping at the page's last match.
    # Without it a service that last ran long ago, or never, means walking every span;
    # with (service, start_ns) instead, a busy service's spans are all read and sorted.
    sa.Index("ix_spans_service_trace_id", "service", "trace_id"),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("start_time", sa.Double),
    sa.Column("duration", sa.Double, nullable=False),
    sa.Column("samples", sa.BigInteger),
    sa.Column("measurements", sa.BigInteger),
    sa.Column("bytes", sa.BigInteger),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_type", sa.String(256)),
    sa.Column("error_message", sa.Text),
    sa.Column("memory_peak_kb", sa.Double),
    sa.Column("info", JSONDoc),
    # Covers a batch summary: counts, sums, min/max and the median (an ordered walk of the
    # durations) are read from the index alone, so 1M items summarise well under a second.
    sa.Index(
        "ix_items_job_id_status_duration",
        "job_id",
        "status",
        "duration",
        "samples",
        "measurements",
        "bytes",
    ),
)

#: Each process's (``source``) latest state of each instrument series; readers merge sources.
series = sa.Table(
    "series",
    metadata,
    sa.Column("source", sa.String(256), primary_key=True),
    sa.Column("name", sa.String(256), primary_key=True),
    sa.Column("labels", sa.Text, primary_key=True),
    sa.Column("job_id", ID),
    sa.Column("type", sa.String(16), nullable=False),
    sa.Column("mode", sa.String(16)),
    sa.Column("value", sa.Double),
    sa.Column("special", sa.String(8)),
    sa.Column("data", JSONDoc),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Index("ix_series_name", "name"),
)

profiles = sa.Table(
    "profiles",
    metadata,
    sa.Column("id", ID, primary_key=True),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("format", sa.String(32), nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_profiles_job_id", "job_id"),
)

#: Encrypted report bundles uploaded by clients at a job's end (see
#: :mod:`jobtrace.report.bundle`). The server holds ciphertext only: the decryption key
#: never leaves the client, so whoever reads the store cannot read the reports.
report_bundles = sa.Table(
    "report_bundles",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("job_id", ID),
    sa.Column("data", sa.LargeBinary, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_report_bundles_job_id", "job_id"),
)

#: The table each record kind is stored in; its columns say what a field may hold.
RECORD_TABLES: dict[str, sa.Table] = {
    model.EXPERIMENT: experiments,
    model.JOB: jobs,
    model.METRIC: metrics,
    model.SPAN: spans,
    model.ITEM: items,
    model.SERIES: series,
    model.PROFILE: profiles,
}

#: Ids of ingested batches (HTTP retries, redelivered queue messages), written in the same
#: transaction as the batch's rows so a batch is stored exactly once.
ingested_batches = sa.Table(
    "ingested_batches",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("received_at", sa.Double, nullable=False),
    sa.Column("records", sa.Integer, nullable=False),
)

#: API tokens of ``jobtrace serve`` (see :mod:`jobtrace.store.tokens`). The secret is never
#: stored: ``key`` is the token's public lookup part, ``digest`` the SHA-256 of the whole
#: token. A name is unique among live tokens only, so revoking a leaked token and creating
#: a new one under the same name keeps the name's jobs writable.
tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("admin", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double),
    sa.Column("last_used_at", sa.Double),
    sa.Index(
        "ix_tokens_live_name",
        "name",
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    ),
)

#: Which token name created (and so may write) each job: claimed by the first authenticated
#: write that names the job, before its rows are written. A table of its own rather than a
#: column of ``jobs``, because any record kind may name a job first (a metric can arrive
#: before its job's snapshot) and the batch writer's job upsert stays untouched.
job_owners = sa.Table(
    "job_owners",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.Double, nullable=False),
)
