"""The index schema has revisions: a new index starts at the newest, an index of an earlier release is upgraded
in place with every row kept, an index a newer release made is refused; on SQLite and PostgreSQL alike."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from node.db import Base, make_engine, open_database
from node.migrations import (
    BASELINE,
    BASELINE_TABLES,
    SchemaError,
    alembic_config,
    database_revision,
    head_revision,
    script_directory,
)
from tests.support.node_process import PACSNODE
from tests.support.postgres import throwaway_database

pytestmark = pytest.mark.timeout(120)

# Rows as the release before migrations wrote them: its own columns, named, so later revisions cannot change them.
BASELINE_ROWS = [
    "INSERT INTO studies (study_uid, accession_number, first_received_at, last_received_at) "
    "VALUES ('1.2.3', 'ACC1', '2026-01-02 03:04:05', '2026-01-02 03:04:05')",
    "INSERT INTO series (series_uid, study_uid, modality, state, instance_count, first_received_at, "
    "last_received_at) VALUES ('1.2.3.4', '1.2.3', 'CT', 'routed', 1, '2026-01-02 03:04:05', '2026-01-02 03:04:05')",
    "INSERT INTO instances (sop_instance_uid, series_uid, sop_class_uid, transfer_syntax_uid, path, size_bytes, "
    "received_at) VALUES ('1.2.3.4.5', '1.2.3.4', '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1', "
    "'/data/1.dcm', 1000, '2026-01-02 03:04:05')",
    "INSERT INTO jobs (id, series_uid, pipeline, routes, destinations, state, attempts, run_count, timings, "
    "created_at) VALUES (7, '1.2.3.4', 'ct-lungs', '[\"chest\"]', '[\"pacs\"]', 'succeeded', 1, 1, '{}', "
    "'2026-01-02 03:04:05')",
    "INSERT INTO result_objects (id, job_id, kind, sop_class_uid, sop_instance_uid, series_uid, study_uid, path, "
    "size_bytes, created_at) VALUES (11, 7, 'seg', '1.2.840.10008.5.1.4.1.1.66.4', '1.2.9', '1.2.8', '1.2.3', "
    "'/data/seg.dcm', 500, '2026-01-02 03:04:05')",
    "INSERT INTO deliveries (id, result_id, destination, state, attempts, created_at) "
    "VALUES (13, 11, 'pacs', 'delivered', 1, '2026-01-02 03:04:05')",
    "INSERT INTO audit_events (at, event, action, outcome, sop_instance_uids, instance_count, size_bytes) "
    "VALUES ('2026-01-02 03:04:05', 'dicom-instances-received', 'C', 0, '[\"1.2.3.4.5\"]', 1, 1000)",
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty index database: SQLite in a temporary folder, or a throw-away PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'pacsnode.db'}"
        return
    with throwaway_database("pacsnode_migrations") as url:
        yield url


def make_release_index(url: str) -> None:
    """An index as the release before migrations left it: the baseline's tables with rows, no revision table."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), BASELINE)
            connection.execute(text("DROP TABLE alembic_version"))
            for statement in BASELINE_ROWS:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return database_revision(connection)
    finally:
        engine.dispose()


def test_the_revisions_form_one_linear_chain_from_the_baseline() -> None:
    revisions = list(script_directory().walk_revisions())  # newest first
    assert revisions[-1].revision == BASELINE and revisions[-1].down_revision is None
    assert len(script_directory().get_heads()) == 1
    for newer, older in zip(revisions, revisions[1:]):
        assert newer.down_revision == older.revision, f"{newer.revision} must revise {older.revision}"


def test_a_new_index_is_created_at_the_newest_revision_as_the_models_describe_it(index_url: str) -> None:
    database = open_database(index_url)
    try:
        with database.engine.connect() as connection:
            assert database_revision(connection) == head_revision()
            differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": True}),
                                           Base.metadata)
        assert differences == [], "node/db.py and the migrations disagree: add a revision for the change"
    finally:
        database.dispose()


def test_an_index_of_the_release_before_migrations_is_upgraded_in_place_keeping_its_rows(
    index_url: str, tmp_path: Path
) -> None:
    make_release_index(index_url)
    assert head_revision() != BASELINE, "this test needs a revision after the baseline"
    with pytest.raises(SchemaError) as refused:
        open_database(index_url)  # an earlier schema is not changed unless asked
    assert "pacsnode db upgrade" in str(refused.value) and "node.upgrade_database" in str(refused.value)
    assert revision_of(index_url) is None  # refused: nothing was written

    config = tmp_path / "pacsnode.yaml"
    config.write_text(yaml.safe_dump({"node": {"storage_dir": str(tmp_path / "storage"), "database_url": index_url}}))
    upgrade = subprocess.run([str(PACSNODE), "db", "upgrade", "--config", str(config)], capture_output=True,
                             text=True, timeout=60)
    assert upgrade.returncode == 0, upgrade.stderr
    assert f"from schema revision {BASELINE} to {head_revision()}" in upgrade.stdout

    database = open_database(index_url)
    try:
        with database.engine.connect() as connection:
            assert database_revision(connection) == head_revision()
            counts = {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                      for table in ("studies", "series", "instances", "jobs", "result_objects", "deliveries",
                                    "audit_events")}
            job = connection.execute(text("SELECT state, pipeline, destinations FROM jobs WHERE id = 7")).one()
        assert set(counts.values()) == {1}, counts
        assert (job.state, job.pipeline) == ("succeeded", "ct-lungs")
    finally:
        database.dispose()


def test_serve_upgrades_when_configured(index_url: str) -> None:
    make_release_index(index_url)
    database = open_database(index_url, upgrade=True)
    try:
        with database.engine.connect() as connection:
            assert database_revision(connection) == head_revision()
            assert connection.execute(text("SELECT accession_number FROM studies")).scalar_one() == "ACC1"
    finally:
        database.dispose()


def test_an_index_a_newer_release_upgraded_is_refused_with_what_to_do(index_url: str) -> None:
    open_database(index_url).dispose()
    engine = make_engine(index_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    for upgrade in (False, True):
        with pytest.raises(SchemaError) as refused:
            open_database(index_url, upgrade=upgrade)
        message = str(refused.value)
        assert "9999_from_the_future" in message and "newer pacsnode" in message and head_revision() in message


def test_tables_that_are_not_an_index_of_pacsnode_are_left_alone(index_url: str) -> None:
    engine = make_engine(index_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE studies (study_uid VARCHAR(64) PRIMARY KEY)"))
    engine.dispose()
    with pytest.raises(SchemaError, match="not an index pacsnode made"):
        open_database(index_url)
    engine = make_engine(index_url)
    with engine.connect() as connection:
        assert set(inspect(connection).get_table_names()) == {"studies"}
    engine.dispose()


def _open_and_report(url: str, results: "mp.Queue[str]") -> None:
    try:
        open_database(url).dispose()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_index_together_create_it_once(index_url: str) -> None:
    context = mp.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_open_and_report, args=(index_url, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(10)
    assert outcomes == ["ok"] * 4
    assert revision_of(index_url) == head_revision()
    engine = make_engine(index_url)
    with engine.connect() as connection:
        assert BASELINE_TABLES <= set(inspect(connection).get_table_names())
    engine.dispose()


T = "'2026-01-02 03:04:05'"
ROWS_BY_REVISION: dict[str, list[str]] = {
    BASELINE: [*BASELINE_ROWS,
               "INSERT INTO destination_refusals (destination, sop_class_uid, detail, first_refused_at, "
               f"last_refused_at) VALUES ('legacy', '1.2.840.10008.5.1.4.1.1.66.4', 'refused', {T}, {T})",
               f"INSERT INTO events (at, level, kind, message) VALUES ({T}, 'info', 'unrouted', 'series 1.2.3.4')"],
    "0002_workers": ["INSERT INTO workers (id, host, pid, queues, state, started_at, seen_at) "
                     f"VALUES ('host:1', 'host', 1, 'gpu', 'alive', {T}, {T})"],
    "0003_study_jobs": ["UPDATE jobs SET inputs = '{\"t1\": \"1.2.3.4\"}' WHERE id = 7"],
    "0004_quality": [
        "INSERT INTO quality_runs (job_id, pipeline, pipeline_version, series_uid, refused, inputs, recorded_at) "
        f"VALUES (7, 'ct-lungs', '1', '1.2.3.4', false, '{{}}', {T})",
        "INSERT INTO quality_measurements (job_id, pipeline, pipeline_version, name, value, recorded_at) "
        f"VALUES (7, 'ct-lungs', '1', 'lungs volume', 4200.0, {T})",
        "INSERT INTO quality_references (id, sop_instance_uid, series_uid, referenced_series_uid, state, received_at) "
        f"VALUES (3, '1.2.5.6', '1.2.5', '1.2.3.4', 'scored', {T})",
        "INSERT INTO quality_scores (reference_id, job_id, pipeline, pipeline_version, kind, name, dice, scored_at) "
        f"VALUES (3, 7, 'ct-lungs', '1', 'segment', 'lungs', 0.9, {T})",
        "INSERT INTO quality_drift (pipeline, pipeline_version, kind, name, baseline_count, recent_count, flagged, "
        f"computed_at) VALUES ('ct-lungs', '1', 'input', 'SliceThickness', 30, 10, false, {T})",
    ],
    "0005_completion": [
        f"INSERT INTO series_associations (association_id, series_uid, first_at) VALUES ('a1', '1.2.3.4', {T})",
        "UPDATE series SET completed_by = 'quiet', reopen_count = 2 WHERE series_uid = '1.2.3.4'",
        "UPDATE jobs SET source_instances = 1 WHERE id = 7",
    ],
}
"""Rows in what each revision's schema adds, written as that revision left the index. A new revision adds its own
entry, so the test below upgrades an index of today's newest revision, holding rows everywhere, by the next."""


def _counts(connection: Connection) -> dict[str, int]:
    tables = set(inspect(connection).get_table_names()) - {"alembic_version"}
    return {table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() for table in tables}


def test_an_index_of_each_revision_holding_rows_everywhere_is_upgraded_by_the_next_keeping_them(index_url: str) -> None:
    revisions = [r.revision for r in reversed(list(script_directory().walk_revisions()))]  # oldest first
    missing = [r for r in revisions if r not in ROWS_BY_REVISION]
    assert not missing, f"add the rows of revision(s) {missing} to ROWS_BY_REVISION (tests/operate/test_migrations.py)"
    engine = make_engine(index_url)
    try:
        with engine.begin() as connection:
            before: dict[str, int] = {}
            for revision in revisions:
                command.upgrade(alembic_config(connection), revision)  # the next revision, from the one before
                counts = _counts(connection)
                assert {t: counts[t] for t in before} == before, f"upgrading to {revision} lost rows"
                for statement in ROWS_BY_REVISION[revision]:
                    connection.execute(text(statement))
                before = _counts(connection)
            job = connection.execute(text("SELECT inputs, source_instances, state FROM jobs WHERE id = 7")).one()
            series = connection.execute(text("SELECT completed_by, reopen_count FROM series")).one()
        assert set(before.values()) == {1}, f"a table without rows: {before}"
        assert (job.source_instances, job.state, series.completed_by, series.reopen_count) == (1, "succeeded", "quiet", 2)
        assert "t1" in (job.inputs if isinstance(job.inputs, dict) else json.loads(job.inputs))
    finally:
        engine.dispose()
    database = open_database(index_url)  # this release takes the index as it is
    database.dispose()
