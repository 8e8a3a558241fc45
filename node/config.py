"""The node's configuration: one YAML file, validated once at start, passed in explicitly.

Every key is documented here with its default. Environment variables override the file:
``PACSNODE_NODE__PORT=11113`` sets ``node.port`` (double underscore between levels).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pipelines.settings import PipelineSettings, ResultOptions

CONFIG_ENV = "PACSNODE_CONFIG"
"""The environment variable naming the configuration file, for commands and worker processes."""
RETIRED_NODE_KEYS = frozenset({"index_fsync"})
"""``node`` keys of earlier releases, ignored: ``index_fsync`` (every index row is now durable before Success)."""
AE_TITLE_PATTERN = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # printable, no backslash


def _check_ae_title(value: str) -> str:
    stripped = value.strip()
    if not stripped or not AE_TITLE_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a valid AE title (1-16 printable characters, no backslash)")
    return stripped


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(StrictModel):
    """DICOM TLS material; all paths are PEM files."""

    enabled: bool = Field(False, description="Use DICOM TLS (the node's SCP, or this connection).")
    certificate: Path | None = Field(None, description="PEM certificate presented to peers.")
    private_key: Path | None = Field(None, description="PEM private key of the certificate.")
    ca_certificates: Path | None = Field(None, description="PEM CA bundle that peers' certificates are checked against.")
    require_client_certificate: bool = Field(False, description="SCP: refuse callers without a certificate signed by ca_certificates.")


CompletionMode = Literal["association", "quiet"]


class CompletionConfig(StrictModel):
    """When a series counts as complete (and its study): from evidence, or after a quiet period.

    ``association``: complete once every association that carried the series was released (not aborted) and
    none is still sending it, or once it holds as many instances as its headers declare (PET), followed by
    ``settle_seconds`` without an instance of the series; without such evidence, after ``quiet_seconds``.
    ``quiet``: only after ``quiet_seconds`` without an instance (for senders that pause mid-series or send
    one association per instance). A series declared complete too early reopens when an instance arrives.
    """

    mode: CompletionMode = Field(
        "association", description="association: complete from evidence (association released, declared counts), "
        "falling back to quiet_seconds; quiet: only after quiet_seconds without an instance."
    )
    settle_seconds: float = Field(
        2, ge=0, description="After the evidence says complete, how long no instance of the series may arrive "
        "before it is declared complete."
    )
    quiet_seconds: float = Field(
        60, gt=0, description="A series with no evidence is complete after this long with no new instance."
    )


class CompletionOverride(StrictModel):
    """A route's or a sender's own completion rule; a key left out takes node.completion's value."""

    mode: CompletionMode | None = Field(None, description="association or quiet; null: node.completion.mode.")
    settle_seconds: float | None = Field(None, ge=0, description="Null: node.completion.settle_seconds.")
    quiet_seconds: float | None = Field(None, gt=0, description="Null: node.completion.quiet_seconds.")

    def over(self, base: CompletionConfig) -> CompletionConfig:
        """``base`` with the keys this override sets."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


class NodeConfig(StrictModel):
    """The receiving node (SCP)."""

    ae_title: str = Field("PACSNODE", description="AE title the node answers to.")
    host: str = Field("0.0.0.0", description="Address the SCP binds to.")
    port: int = Field(11112, ge=1, le=65535, description="TCP port of the SCP.")
    storage_dir: Path = Field(Path("var/pacsnode"), description="Where instances, results and the SQLite index live.")
    database_url: str = Field(
        "",
        description="SQLAlchemy URL of the index; empty: SQLite (WAL) at <storage_dir>/pacsnode.db. "
        "PostgreSQL: postgresql+psycopg://user@host/db.",
    )
    allowed_calling_ae_titles: list[str] = Field(
        default_factory=list, description="Calling AE titles accepted; empty accepts any."
    )
    calling_ae_hosts: dict[str, str] = Field(
        default_factory=dict,
        description="Optional host binding: a calling AE title is accepted only from this address.",
    )
    completion: CompletionConfig = Field(
        default_factory=CompletionConfig,
        description="When a series is complete: from the evidence of its associations, or a quiet period. Routes "
        "and senders may set their own.",
    )
    study_quiet_seconds: float = Field(
        300, gt=0, description="A study-level job (a route with inputs) whose inputs are not all there waits this long "
        "after the study's last instance before it fails, naming the missing inputs.")
    max_associations: int = Field(25, ge=1, description="Concurrent associations before new ones are rejected.")
    max_associations_per_host: int = Field(
        10, ge=1, description="Concurrent associations from one address by callers that are not configured senders "
        "(configured senders: calling AE titles named in allowed_calling_ae_titles, calling_ae_hosts or senders)."
    )
    max_associations_per_ae_title: int = Field(10, ge=1, description="Concurrent associations with one calling AE title.")
    reserved_associations: int = Field(
        5, ge=0, description="Of max_associations, how many only configured senders may use, so a flood from "
        "elsewhere cannot shut them out (applies once any sender is configured; others keep at least one)."
    )
    max_pending_connections: int = Field(
        50, ge=1, description="Connections of one receiving process that are not yet associations (each costs a "
        "thread); more are turned away at once with an A-ASSOCIATE-RJ."
    )
    max_pending_per_host: int = Field(10, ge=1, description="Of max_pending_connections, how many from one address.")
    receive_processes: int = Field(
        1, ge=1, le=64, description="Receiving processes sharing the port (SO_REUSEPORT); more use more cores."
    )
    pdu_max_length: int = Field(262144, ge=0, description="Maximum PDU length the SCP offers (0: unlimited).")
    acse_timeout: float = Field(
        30, gt=0, description="Seconds from a connection to its whole A-ASSOCIATE-RQ (a deadline, however the "
        "bytes trickle); also bounds the TLS handshake."
    )
    dimse_timeout: float = Field(60, gt=0, description="Seconds to wait for the rest of a DIMSE message once it has begun.")
    network_timeout: float = Field(60, gt=0, description="Seconds of network silence before an association is aborted.")
    pdu_timeout: float = Field(
        60, gt=0, description="Seconds one PDU may take from its first byte to its last (a deadline, however the "
        "bytes trickle)."
    )
    min_free_disk_mb: int = Field(
        1024, ge=0, description="Free space in storage_dir below which instances are refused (new associations, "
        "and each C-STORE of those in progress, with 0xA700); results wait below half of it, so the last half "
        "stays for the index and the embedded broker. 0: off."
    )
    duplicate_instances: Literal["keep", "replace", "refuse"] = Field(
        "keep", description="An instance whose SOP Instance UID is already stored: keep the stored copy and answer "
        "Success (as PACS do), replace it and reopen its series so its jobs run again, or refuse it (0x0111). "
        "Recorded as an event either way."
    )
    upgrade_database: bool = Field(
        False, description="`serve` upgrades an index made by an earlier release to this release's schema at "
        "start. Off: it refuses to start on such an index and says to run `pacsnode db upgrade`."
    )
    tls: TlsConfig = Field(default_factory=TlsConfig, description="DICOM TLS of the SCP.")

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))

    @model_validator(mode="before")
    @classmethod
    def _drop_retired_keys(cls, data: Any) -> Any:
        """Keys earlier releases had and this one no longer needs are accepted and ignored, so that a node's
        configuration file stays valid across an upgrade."""
        if isinstance(data, dict) and RETIRED_NODE_KEYS & data.keys():
            data = {key: value for key, value in data.items() if key not in RETIRED_NODE_KEYS}
        return data

    @model_validator(mode="before")
    @classmethod
    def _quiet_seconds_moved(cls, data: Any) -> Any:
        """Accept the former ``node.series_quiet_seconds`` as ``node.completion.quiet_seconds``."""
        if not isinstance(data, dict) or "series_quiet_seconds" not in data:
            return data
        data = dict(data)
        quiet = data.pop("series_quiet_seconds")
        completion = dict(data.get("completion") or {})
        if "quiet_seconds" in completion:
            raise ValueError("series_quiet_seconds and completion.quiet_seconds are the same setting: keep "
                             "completion.quiet_seconds only")
        data["completion"] = {**completion, "quiet_seconds": quiet}
        return data

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _check_allowed(cls, values: list[str]) -> list[str]:
        return [_check_ae_title(v) for v in values]

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.storage_dir / 'pacsnode.db').resolve()}"


class QueueConfig(StrictModel):
    """Job transport (Celery)."""

    broker_url: str = Field(
        "",
        description="Empty: the embedded default (Celery's filesystem transport under storage_dir, no service "
        "needed). Production: redis://host:6379/0.",
    )
    broker_dir: Path | None = Field(
        None, description="Folder of the embedded broker's messages; empty: <storage_dir>/broker. Another file "
        "system keeps jobs moving when storage_dir fills up."
    )
    embedded_worker: bool = Field(True, description="`serve` starts a worker itself when the broker is embedded.")
    worker_concurrency: int = Field(1, ge=1, description="Processes per worker started by `serve`.")
    cpu_threads_per_process: int = Field(
        0, ge=0, description="CPU threads each worker process gives a model (torch intra-op threads). 0: the host's "
        "cores divided by the worker's processes, so concurrent jobs do not oversubscribe the cores."
    )
    numpy_hugepages: bool = Field(
        False, description="Let worker processes ask for transparent huge pages for large arrays (numpy's default). "
        "Off: where the kernel compacts memory for them, volumes load faster and more evenly without."
    )
    reconcile_seconds: float = Field(10, gt=0, description="How often the reconciler re-checks jobs and deliveries.")
    job_timeout_seconds: float = Field(3600, gt=0, description="A running job with no progress for this long is timed out.")
    max_job_attempts: int = Field(3, ge=1, description="Attempts before a job is failed for good.")
    heartbeat_seconds: float = Field(
        10, gt=0, description="How often a running job refreshes its heartbeat (keep well below job_timeout_seconds)."
    )
    requeue_after_seconds: float = Field(
        60,
        gt=0,
        description="A job still queued this long while its broker queue is empty lost its message: re-enqueue it.",
    )
    retry_initial_seconds: float = Field(5, gt=0, description="First delay before a job's transient error is retried; doubles.")
    retry_max_seconds: float = Field(600, gt=0, description="Cap on one job retry delay.")
    key_prefix: str = Field("", description="Prefix of every Redis key the node uses, to share one Redis safely.")
    job_memory_mb: int = Field(
        0, ge=0, description="Memory (MB) the jobs of one worker host may take together: each job reserves its "
        "pipeline's memory_mb while it runs, and one that would not fit waits (its reason says so) instead of "
        "starting. 0: the host's total memory less 1 GB.")
    resource_wait_seconds: float = Field(
        30, gt=0, description="How long a job that waits for memory (or GPU memory) waits before it is tried again.")


class DeliveryConfig(StrictModel):
    """Retry policy of the outbox."""

    retry_initial_seconds: float = Field(5, gt=0, description="First retry delay; doubles each attempt.")
    retry_max_seconds: float = Field(1800, gt=0, description="Cap on one retry delay.")
    give_up_after_seconds: float = Field(6 * 3600, gt=0, description="A delivery still failing after this long is failed.")
    connect_timeout: float = Field(10, gt=0, description="Seconds to wait for a destination's association.")
    dimse_timeout: float = Field(120, gt=0, description="Seconds to wait for a destination's C-STORE response.")
    sending_lease_seconds: float = Field(
        900, gt=0, description="A delivery 'sending' this long (its sender silent) is reset to pending and resent."
    )
    requeue_after_seconds: float = Field(
        30, gt=0, description="A pending delivery whose task message was lost is enqueued again after this long."
    )
    refusal_retry_hours: float = Field(
        24, ge=0, description="A destination that refused a SEG SOP class at association is offered that class again "
        "this many hours after its last refusal: accepted, the refusal is forgotten; refused, the fallback goes as "
        "before and the wait starts again. 0: never offered again (`pacsnode refusals --clear` forgets at once)."
    )
    worker_concurrency: int = Field(
        2, ge=1, description="Processes of the delivery worker `serve` starts: the results of different jobs go out "
        "side by side, so one job's large SEG does not hold up the next job's results."
    )


class SenderConfig(StrictModel):
    """A calling AE known to the node: its address (for routes with reply_to_sender), its completion rule."""

    ae_title: str
    host: str = Field("", description="Empty: the address the series came from.")
    port: int = Field(104, ge=1, le=65535)
    outputs: list[Literal["seg", "sr", "kos", "fallback"]] = Field(
        default_factory=lambda: ["seg", "sr"],
        description="Which result objects go back to this sender: seg, sr, kos (key images), fallback.",
    )
    completion: CompletionOverride | None = Field(
        None, description="This sender's own completion rule (e.g. {mode: quiet} for a sender that opens one "
        "association per instance); it wins over the routes'. Null: the routes' or node.completion."
    )

    _ae = field_validator("ae_title")(classmethod(lambda cls, v: _check_ae_title(v)))


class DestinationConfig(StrictModel):
    """A place results are sent to."""

    name: str = Field(description="Name routes refer to.")
    ae_title: str = Field("", description="Called AE title of the destination (kind dimse).")
    host: str = Field("", description="Host name or address of the destination (kind dimse).")
    port: int = Field(104, ge=1, le=65535, description="TCP port of the destination (kind dimse).")
    kind: Literal["dimse", "dicomweb"] = Field("dimse", description="dimse (C-STORE) or dicomweb (STOW-RS).")
    url: str = Field("", description="STOW-RS base URL for kind: dicomweb.")
    outputs: list[Literal["seg", "sr", "kos", "fallback"]] = Field(
        default_factory=lambda: ["seg", "sr"],
        description="Which result objects this destination receives: seg, sr, kos (key images), fallback.",
    )
    tls: bool = Field(False, description="Send with DICOM TLS, using node.tls's certificate and CA bundle.")

    @model_validator(mode="after")
    def _check_kind(self) -> "DestinationConfig":
        if self.kind == "dimse":
            if not self.ae_title or not self.host:
                raise ValueError(f"destination {self.name!r}: kind dimse needs ae_title and host")
            self.ae_title = _check_ae_title(self.ae_title)
        elif not self.url:
            raise ValueError(f"destination {self.name!r}: kind dicomweb needs url")
        return self


class RouteConfig(StrictModel):
    """A rule: which series go to which pipelines and destinations."""

    name: str = Field(description="Name of the rule, shown in logs and `route test`.")
    match: dict[str, Any] = Field(default_factory=dict, description="DICOM keyword -> value, list, '~regex' or {min,max}.")
    called_ae_title: str | list[str] | None = Field(None, description="Only series sent to this called AE title.")
    calling_ae_title: str | list[str] | None = Field(None, description="Only series sent by this calling AE title.")
    pipelines: list[str] = Field(default_factory=list, description="Pipelines run on matching series.")
    destinations: list[str] = Field(default_factory=list, description="Destinations that receive the results.")
    reply_to_sender: bool = Field(False, description="Also send results back to the calling AE's known address.")
    completion: CompletionOverride | None = Field(
        None, description="The completion rule of series this route matches (on their first instance); when "
        "several matching routes set one, the most cautious applies. Null: node.completion."
    )
    inputs: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Study-level route: input name -> conditions (as match) one series of the study must meet, e.g. "
        "{t1: {SeriesDescription: '~(?i)t1(?!.*c)'}, flair: {...}}. The pipelines get every input as a channel, in "
        "the order they declare, on the reference input's grid; one job per study. Empty: one job per series.")
    reference: str = Field("", description="The input whose grid the others are resampled onto; empty: the first input.")

    @model_validator(mode="after")
    def _check_inputs(self) -> "RouteConfig":
        if self.reference and self.reference not in self.inputs:
            raise ValueError(f"route {self.name!r}: reference {self.reference!r} is not one of its inputs {sorted(self.inputs)}")
        return self

    @property
    def reference_input(self) -> str:
        """The input whose grid the study-level job uses ('' for a series-level route)."""
        return self.reference or next(iter(self.inputs), "")


class LoggingConfig(StrictModel):
    level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    json_format: bool = Field(False, alias="json", description="One JSON object per log line (with job and series UIDs).")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class WebConfig(StrictModel):
    """The read-only dashboard, Prometheus metrics and health endpoints (served by `pacsnode serve`)."""

    enabled: bool = Field(False, description="Serve the dashboard, /metrics, /healthz and /readyz.")
    host: str = Field("127.0.0.1", description="Address the web server binds to.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port of the web server (0: any free port).")
    token: str = Field(
        "",
        description="Dashboard token: posted once on the login page, which opens a session (a signed cookie "
        "holding a session ID, never the token), or sent as 'Authorization: Bearer <token>' by scripts. Empty: "
        "the dashboard is refused. /metrics, /healthz and /readyz need no token.",
    )
    session_minutes: float = Field(
        480, gt=0, description="How long a dashboard session lasts; logout ends it at once, a restart ends them all."
    )
    login_attempts_per_minute: int = Field(
        5, ge=1, description="Failed logins allowed per client address in a minute; more are answered 429."
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=list, description="Addresses of reverse proxies whose X-Forwarded-Proto and -For are "
        "believed (TLS ends there: session cookies are then marked Secure). Empty: none."
    )
    refresh_seconds: int = Field(10, ge=1, description="How often dashboard pages reload themselves.")


class RetentionConfig(StrictModel):
    """Removal of received instances and results once their results are delivered."""

    enabled: bool = Field(False, description="Remove old data at all.")
    keep_hours: float = Field(
        72, gt=0, description="Hours a series is kept after its last result was delivered (or it was left unrouted)."
    )
    remove_undelivered_after_hours: float = Field(
        0, ge=0, description="Also remove series whose results never got delivered after this many hours (0: never)."
    )
    check_seconds: float = Field(300, gt=0, description="How often the retention loop runs.")


INPUT_ATTRIBUTES = ["Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "SliceThickness", "ProtocolName", "BodyPartExamined"]


class QualityConfig(StrictModel):
    """Quality monitoring: references that arrive at the node are scored; measurements are watched for drift."""

    reference_calling_ae_titles: list[str] = Field(
        default_factory=list,
        description="Calling AE titles whose foreign SEGs count as references (empty: any sender).",
    )
    reference_series_description: str = Field(
        "", description="A regular expression a reference SEG's Series Description must match (empty: any)."
    )
    score_seconds: float = Field(5, gt=0, description="How often references that arrived are scored.")
    drift_seconds: float = Field(300, gt=0, description="How often drift is checked.")
    drift_baseline_runs: int = Field(
        100, ge=2, description="The first runs of a pipeline version: the baseline its later runs are compared with."
    )
    drift_recent_runs: int = Field(50, ge=2, description="The latest runs after the baseline compared with it.")
    drift_min_runs: int = Field(20, ge=2, description="Fewest runs in each window before drift is judged.")
    drift_psi_threshold: float = Field(
        0.25, gt=0, description="Population stability index above which a measurement or finding is flagged."
    )
    drift_p_value: float = Field(
        0.01, gt=0, lt=1,
        description="A flagged shift must also be significant: KS test (measurements) or chi-square (findings) p-value below this.",
    )
    drift_refusal_increase: float = Field(
        0.2, gt=0, le=1, description="Rise of the share of series a pipeline refuses (0-1) that is flagged."
    )
    input_attributes: list[str] = Field(
        default_factory=lambda: list(INPUT_ATTRIBUTES),
        description="DICOM keywords of the inputs watched for values the baseline never had.",
    )
    metrics_window_days: float = Field(30, gt=0, description="Window of the rolling quality metrics on /metrics.")


class Settings(BaseSettings):
    """The whole configuration file."""

    model_config = SettingsConfigDict(env_prefix="PACSNODE_", env_nested_delimiter="__", extra="forbid")

    node: NodeConfig = Field(default_factory=NodeConfig)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    results: ResultOptions = Field(default_factory=ResultOptions)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    senders: list[SenderConfig] = Field(
        default_factory=list, description="Known calling AEs: address (AE title, host, port) for routes with "
        "reply_to_sender, and their own completion rule."
    )
    routes: list[RouteConfig] = Field(default_factory=list)
    pipelines: list[PipelineSettings] = Field(default_factory=list)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment variables win over the file.
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _check_references(self) -> "Settings":
        names = [d.name for d in self.destinations]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"destinations: duplicate name(s) {sorted(duplicates)}")
        for route in self.routes:
            for dest in route.destinations:
                if dest not in names:
                    raise ValueError(f"routes[{route.name}]: unknown destination {dest!r} (known: {names})")
        return self

    def destination(self, name: str) -> DestinationConfig:
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise KeyError(f"unknown destination {name!r}")

    def sender(self, ae_title: str) -> SenderConfig | None:
        """The known address of calling AE ``ae_title``, if declared under ``senders``."""
        for sender in self.senders:
            if sender.ae_title == ae_title.strip():
                return sender
        return None

    @property
    def embedded_broker(self) -> bool:
        return not self.queue.broker_url


class ConfigError(Exception):
    """The configuration file is missing, unreadable or invalid; the message names the key."""


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {location}: {item['msg']}")
    return "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Load and validate the YAML file at ``path`` (or defaults and environment alone)."""
    data: dict[str, Any] = {}
    source = "environment"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read configuration file: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: the top level must be a mapping of sections (node, queue, ...)")
        data = loaded
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from exc
