"""Logging configuration, applied once at each entry point (CLI commands, receiving processes)."""

from __future__ import annotations

import json
import logging
import sys

from node.config import LoggingConfig

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("pynetdicom", "celery", "kombu", "amqp", "urllib3", "PIL")
# Identifiers a record may carry as `extra=`; JSON lines include them as fields (UIDs and AE titles, no PHI).
CONTEXT_FIELDS = ("job_id", "delivery_id", "pipeline", "study_uid", "series_uid", "sop_instance_uid",
                  "calling_ae_title", "audit_event")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(config: LoggingConfig, *, stream=None) -> None:  # type: ignore[no-untyped-def]
    """Send all records to stderr (or ``stream``) in text or JSON, at the configured level."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if config.json_format else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    level = logging.getLevelName(config.level.upper())
    if not isinstance(level, int):
        raise ValueError(f"logging.level {config.level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
    root.setLevel(level)
    # pynetdicom logs every PDU at INFO/DEBUG (and dataset contents at DEBUG): keep it to warnings.
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
