"""The node's index: the source of truth for instances, series, jobs and deliveries.

SQLite (WAL) by default inside ``storage_dir``; any SQLAlchemy URL (PostgreSQL) works too.
Rows move through named states; a restart resumes from them.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    select,
    event,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

UID_LENGTH = 64


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SeriesState(str, enum.Enum):
    receiving = "receiving"
    complete = "complete"
    routed = "routed"
    unrouted = "unrouted"
    reference = "reference"  # a foreign SEG or SR of a processed series: scored against its jobs, not routed


class AssociationOutcome(str, enum.Enum):
    released = "released"  # A-RELEASE: the sender said it was done
    aborted = "aborted"  # A-ABORT, a timeout or a broken connection
    interrupted = "interrupted"  # the node restarted before the series completed


class CompletionRule(str, enum.Enum):
    """What declared a series complete."""

    association = "association"  # its associations were released, then nothing arrived for settle_seconds
    declared = "declared"  # it holds as many instances as its headers declare
    quiet = "quiet"  # nothing arrived for quiet_seconds


class JobState(str, enum.Enum):
    waiting = "waiting"  # a study-level job whose inputs are not all there yet
    queued = "queued"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"


class DeliveryState(str, enum.Enum):
    pending = "pending"
    sending = "sending"
    delivered = "delivered"
    failed = "failed"
    replaced = "replaced"  # the destination refused this SOP class; its fallback was sent instead


class WorkerState(str, enum.Enum):
    alive = "alive"
    stopped = "stopped"  # ended in order
    dead = "dead"  # stopped beating: killed, or its host is gone


def _enum(cls: type[enum.Enum]) -> Enum:
    return Enum(cls, native_enum=False, length=16, validate_strings=True)


class Study(Base):
    __tablename__ = "studies"

    study_uid: Mapped[str] = mapped_column(String(UID_LENGTH), primary_key=True)
    accession_number: Mapped[str | None] = mapped_column(String(64))
    first_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # when its last receiving series completed


class Series(Base):
    __tablename__ = "series"

    series_uid: Mapped[str] = mapped_column(String(UID_LENGTH), primary_key=True)
    study_uid: Mapped[str] = mapped_column(ForeignKey("studies.study_uid"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[SeriesState] = mapped_column(_enum(SeriesState), default=SeriesState.receiving, index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    calling_ae_title: Mapped[str | None] = mapped_column(String(16))
    called_ae_title: Mapped[str | None] = mapped_column(String(16))
    calling_host: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    completed_by: Mapped[CompletionRule | None] = mapped_column(_enum(CompletionRule))
    reopen_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    reopened_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    removed_at: Mapped[dt.datetime | None] = mapped_column(DateTime)  # files removed by retention


class SeriesAssociation(Base):
    """Evidence of completion: an association that carried instances of a series being assembled.

    A row is added with the association's first instance of the series and closed (``outcome``) when the
    association ends. Rows of a series are removed when it completes, so the table holds only the evidence
    of series still receiving (and of associations still open).
    """

    __tablename__ = "series_associations"

    association_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(UID_LENGTH), primary_key=True, index=True)
    first_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)  # its first instance of the series
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    outcome: Mapped[AssociationOutcome | None] = mapped_column(_enum(AssociationOutcome))  # null: still open


class Instance(Base):
    __tablename__ = "instances"

    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), primary_key=True)
    series_uid: Mapped[str] = mapped_column(ForeignKey("series.series_uid"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    calling_ae_title: Mapped[str | None] = mapped_column(String(16))
    called_ae_title: Mapped[str | None] = mapped_column(String(16))
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """One (series, pipeline): the unit of inference work."""

    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("series_uid", "pipeline", name="uq_job_series_pipeline"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_uid: Mapped[str] = mapped_column(ForeignKey("series.series_uid"), index=True)
    pipeline: Mapped[str] = mapped_column(String(64))
    routes: Mapped[list] = mapped_column(JSON, default=list)
    destinations: Mapped[list] = mapped_column(JSON, default=list)
    state: Mapped[JobState] = mapped_column(_enum(JobState), default=JobState.queued, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    run_count: Mapped[int] = mapped_column(Integer, default=0)
    source_instances: Mapped[int | None] = mapped_column(Integer)  # instances its last successful run read
    celery_task_id: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(128))
    timings: Mapped[dict] = mapped_column(JSON, default=dict)
    inputs: Mapped[dict | None] = mapped_column(JSON(none_as_null=True))
    """A study-level job's series: {"reference": name, "series": {name: series UID}}; None for one series."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class ResultObject(Base):
    """A DICOM object a job produced (SEG, SR, fallback); keyed by the job so a re-run replaces it."""

    __tablename__ = "result_objects"
    __table_args__ = (UniqueConstraint("job_id", "kind", name="uq_result_job_kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    series_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    study_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Delivery(Base):
    """The outbox: one row per (result object, destination)."""

    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("result_id", "destination", name="uq_delivery_result_destination"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("result_objects.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    state: Mapped[DeliveryState] = mapped_column(_enum(DeliveryState), default=DeliveryState.pending, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    sending_since: Mapped[dt.datetime | None] = mapped_column(DateTime)
    worker: Mapped[str | None] = mapped_column(String(128))  # host:pid:token of the sender holding the row
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class WorkerProcess(Base):
    """A worker process (a Celery pool process) as its heartbeats show it; the reconciler judges it dead when
    they stop. What `pacsnode status`, the dashboard, the metrics and /readyz show of the workers."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # host:pid:token, the prefix of its job leases
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[str] = mapped_column(String(64))  # comma-separated: gpu, delivery
    state: Mapped[WorkerState] = mapped_column(_enum(WorkerState), default=WorkerState.alive, index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class DestinationRefusal(Base):
    """A SOP class a destination refused at association: later jobs send it the fallback instead."""

    __tablename__ = "destination_refusals"
    __table_args__ = (UniqueConstraint("destination", "sop_class_uid", name="uq_refusal_destination_class"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    detail: Mapped[str | None] = mapped_column(Text)
    first_refused_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    last_refused_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class NodeEvent(Base):
    """Errors and audit events (no PHI): what `pacsnode status` shows as recent errors."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    level: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    calling_ae_title: Mapped[str | None] = mapped_column(String(16))
    uid: Mapped[str | None] = mapped_column(String(UID_LENGTH))


class AuditEvent(Base):
    """An IHE ATNA-style audit record: who sent what, where results went, what was removed. No PHI."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    event: Mapped[str] = mapped_column(String(48), index=True)  # e.g. "dicom-instances-received"
    association_id: Mapped[str | None] = mapped_column(String(64))  # groups one association's events
    action: Mapped[str] = mapped_column(String(1))  # ATNA EventActionCode: C, R, U, D, E
    outcome: Mapped[int] = mapped_column(Integer, default=0)  # ATNA EventOutcomeIndicator: 0, 4, 8, 12
    source_ae_title: Mapped[str | None] = mapped_column(String(16))
    source_host: Mapped[str | None] = mapped_column(String(64))
    destination_ae_title: Mapped[str | None] = mapped_column(String(16))
    destination_host: Mapped[str | None] = mapped_column(String(64))
    study_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH), index=True)
    series_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH))
    sop_instance_uids: Mapped[list] = mapped_column(JSON, default=list)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    size_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    detail: Mapped[str | None] = mapped_column(Text)


class QualityRun(Base):
    """What quality monitoring keeps of a job's last run: the pipeline version, whether it refused the series,
    and the series' acquisition attributes (scanner, kernel, slice thickness, protocol). No PHI."""

    __tablename__ = "quality_runs"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    pipeline: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_version: Mapped[str] = mapped_column(String(64))
    series_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    refused: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    inputs: Mapped[dict] = mapped_column(JSON, default=dict)
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class QualityMeasurement(Base):
    """One value a job's pipeline reported (a measurement, or a finding's value in ``category``): what drift
    is watched on."""

    __tablename__ = "quality_measurements"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_quality_measurement_job_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    pipeline: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_version: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(160))
    value: Mapped[float | None] = mapped_column(Float)
    category: Mapped[str | None] = mapped_column(String(128))
    unit: Mapped[str | None] = mapped_column(String(32))
    recorded_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class QualityReference(Base):
    """A foreign SEG or SR instance recognised as a reference for a series the node processed."""

    __tablename__ = "quality_references"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    series_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)  # the reference's own series
    referenced_series_uid: Mapped[str] = mapped_column(String(UID_LENGTH), index=True)
    calling_ae_title: Mapped[str | None] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending, scored, unmatched, failed
    reason: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    scored_at: Mapped[dt.datetime | None] = mapped_column(DateTime)


class QualityScore(Base):
    """One score of a job against a reference: a segment (Dice, HD95, volumes) or a finding (agreement)."""

    __tablename__ = "quality_scores"
    __table_args__ = (UniqueConstraint("reference_id", "job_id", "kind", "name", name="uq_quality_score"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reference_id: Mapped[int] = mapped_column(ForeignKey("quality_references.id"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    pipeline: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_version: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "segment" or "classification"
    name: Mapped[str] = mapped_column(String(128))  # the segment label or the finding's concept
    dice: Mapped[float | None] = mapped_column(Float)
    hd95_mm: Mapped[float | None] = mapped_column(Float)
    volume_ml: Mapped[float | None] = mapped_column(Float)
    reference_volume_ml: Mapped[float | None] = mapped_column(Float)
    predicted: Mapped[str | None] = mapped_column(String(128))
    reference_value: Mapped[str | None] = mapped_column(String(128))
    scored_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)


class QualityDrift(Base):
    """The latest drift check of one watched quantity of one pipeline version (replaced at each check)."""

    __tablename__ = "quality_drift"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    pipeline: Mapped[str] = mapped_column(String(64), index=True)
    pipeline_version: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # "measurement", "finding", "input" or "refusals"
    name: Mapped[str] = mapped_column(String(160))
    statistic: Mapped[float | None] = mapped_column(Float)  # PSI, or the refusal share's increase
    p_value: Mapped[float | None] = mapped_column(Float)  # two-sample KS test (measurements)
    baseline_count: Mapped[int] = mapped_column(Integer, default=0)
    recent_count: Mapped[int] = mapped_column(Integer, default=0)
    flagged: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    detail: Mapped[str | None] = mapped_column(Text)
    computed_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _set_commit_sync(dbapi_connection, dialect: str, *, full: bool) -> None:  # type: ignore[no-untyped-def]
    """Whether a new connection's commits wait for the disk (SQLite ``synchronous``, PostgreSQL
    ``synchronous_commit``)."""
    cursor = dbapi_connection.cursor()
    if dialect == "sqlite":
        cursor.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
    elif dialect == "postgresql":
        cursor.execute(f"SET synchronous_commit TO {'ON' if full else 'OFF'}")
    cursor.close()
    if dialect == "postgresql":
        dbapi_connection.commit()


def _postgresql_full_sync(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # Whatever the server's default: a commit returns once it is on disk (Success means indexed).
    _set_commit_sync(dbapi_connection, "postgresql", full=True)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, full sync and a generous busy timeout; PostgreSQL commits wait for
    the disk even where the server's ``synchronous_commit`` is off."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        if engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _postgresql_full_sync)
    return engine


class Database:
    """Engine plus session factory; create once per process and pass it in."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str, upgrade: bool = False) -> Database:
    """Open the index at ``url`` at this release's schema: a new database is created, an older one upgraded
    when ``upgrade`` is true; otherwise (and for a newer one) :class:`node.migrations.SchemaError` says what
    to do."""
    from node.migrations import prepare

    database = Database(url)
    try:
        prepare(database.engine, upgrade=upgrade)
    except BaseException:
        database.dispose()
        raise
    return database


def record_event(
    session: Session,
    kind: str,
    message: str,
    *,
    level: str = "error",
    calling_ae_title: str | None = None,
    uid: str | None = None,
) -> None:
    session.add(NodeEvent(kind=kind, message=message, level=level, calling_ae_title=calling_ae_title, uid=uid))


def count_by_state(session: Session, column: object, *where: object) -> dict[str, int]:
    """How many rows have each value of a state ``column`` (``Series.state``...), keyed by the value's name;
    ``where`` narrows the rows counted."""
    query = select(column, func.count()).where(*where).group_by(column)  # type: ignore[arg-type]
    return {str(getattr(state, "value", state)): int(count) for state, count in session.execute(query)}


def get_or_add(session: Session, model: type[Base], **key: object) -> Base:
    """The row of ``model`` with these column values, or a new one with them added to the session."""
    row = session.scalars(select(model).filter_by(**key)).first()
    if row is None:
        row = model(**key)
        session.add(row)
    return row


def relax_commit_sync(database: Database) -> None:
    """Let ``database``'s commits return before the index's own disk sync (SQLite WAL ``synchronous=NORMAL``,
    PostgreSQL ``synchronous_commit off``): the database stays consistent, and a power cut may lose the last
    few commits. Used where what a commit records can be recovered otherwise (see each caller)."""
    dialect = database.engine.dialect.name

    def on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        _set_commit_sync(dbapi_connection, dialect, full=False)

    event.listen(database.engine, "connect", on_connect)


def keep_commit_sync(session: Session) -> None:
    """Make the commit of ``session``'s transaction wait for the index's disk sync, on a connection that
    ``relax_commit_sync`` relaxed: for a record of something that cannot be done again, such as objects sent to
    a destination (PostgreSQL ``SET LOCAL synchronous_commit``; on SQLite a relaxed commit is lost only when the
    host itself stops, not when a process does)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL synchronous_commit TO ON"))
