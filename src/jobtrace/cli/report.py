"""``jobtrace report``: rebuild a job's report directory from the store, or download and
decrypt the report a job uploaded to a jobtrace server."""

from __future__ import annotations

from pathlib import Path

import click

from jobtrace.cli._common import fail, handle_errors, store_option

__all__ = ["report"]


@click.group()
def report() -> None:
    """Rebuild or download job reports (report.json, report.html, profile.json).

    \b
        jobtrace report rebuild <job id> [--out DIR]
        jobtrace report download DOWNLOAD_KEY DECRYPTION_KEY [--out DIR]
    """


@report.command("rebuild")
@click.argument("job_id")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the report into [default: the job's report directory, "
    "$JOBTRACE_DIR/reports/<job id>].",
)
@store_option
@handle_errors
def rebuild(job_id: str, out: Path | None, store_url: str | None) -> None:
    """Write job JOB_ID's whole report directory again from the store.

    For a job whose report directory was pruned, written on another host, or never
    written (a decorated function's calls, --no-report). A unique id prefix is enough;
    the store may be a database or a jobtrace server (http://…).
    """
    from jobtrace import _config
    from jobtrace.cli.profile import load_job
    from jobtrace.report.directory import write_report_json
    from jobtrace.report.job_report import write_profile_report

    job, profile = load_job(store_url, job_id)
    target = out or _config.resolve().reports_dir / str(job["id"])
    try:
        write_report_json(target, job)
        write_profile_report(target, job, profile)
    except OSError as exc:
        fail(f"cannot write the report into {target}: {exc.strerror or exc}")
    click.echo(f"wrote the report of job {job['id']} into {target}")
    if profile.empty:
        click.echo("note: the job has no profile (run with profiling off?)", err=True)


@report.command("download")
@click.argument("download_key")
@click.argument("decryption_key")
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory to write the report into [default: ./jobtrace-report-<download key>].",
)
@store_option
@handle_errors
def download(
    download_key: str, decryption_key: str, out: Path | None, store_url: str | None
) -> None:
    """Fetch the encrypted report a job uploaded to a jobtrace server and decrypt it.

    A job recording to a server logs both keys when it ends; the server keeps only the
    ciphertext, so only someone with the decryption key can read the report. --store (or
    JOBTRACE_URL) names the server; JOBTRACE_TOKEN is sent if set.
    """
    from jobtrace import _config
    from jobtrace.report.bundle import download_bundle, open_bundle, unpack

    url = _config.resolve(url=store_url).url
    if url.split("://", 1)[0].lower() not in {"http", "https"}:
        fail(
            "report download needs a jobtrace server: --store http://host:port "
            f"(or JOBTRACE_URL), not {_config.mask_url(url)!r}"
        )
    sealed = download_bundle(url, download_key)
    plain = open_bundle(sealed, download_key, decryption_key)
    target = out or Path(f"jobtrace-report-{download_key}")
    try:
        written = unpack(plain, target)
    except OSError as exc:
        fail(f"cannot write the report into {target}: {exc.strerror or exc}")
        return
    click.echo(f"wrote {', '.join(p.name for p in written)} into {target}")
