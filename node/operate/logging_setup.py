"""Logging configuration, applied once at each entry point (CLI commands, receiving processes)."""

from __future__ import annotations

import json
import logging
import sys

import pydicom.config

from node.config import LoggingConfig
from node.operate.redaction import RedactingFilter, redact_traceback

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(processName)s %(name)s: %(message)s"
QUIET_LIBRARIES = ("pynetdicom", "celery", "kombu", "amqp", "urllib3", "PIL")
# Identifiers a record may carry as `extra=`; JSON lines include them as fields (UIDs and AE titles, no PHI).
CONTEXT_FIELDS = ("job_id", "delivery_id", "pipeline", "study_uid", "series_uid", "sop_instance_uid",
                  "calling_ae_title", "audit_event")


class TextFormatter(logging.Formatter):
    """The text format, with quoted values withheld from exception lines."""

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]  # noqa: N802 - logging's name
        return redact_traceback(super().formatException(ei))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers; quoted values withheld from exception lines."""

    def formatException(self, ei) -> str:  # type: ignore[no-untyped-def]  # noqa: N802 - logging's name
        return redact_traceback(super().formatException(ei))

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
    """Send all records to stderr (or ``stream``) in text or JSON, at the configured level.

    Python warnings become log records too, and every record passes the redaction filter
    (``node.operate.redaction``): no header value reaches the log, whichever library wrote the text.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if config.json_format else TextFormatter(TEXT_FORMAT))
    handler.addFilter(RedactingFilter())
    logging.captureWarnings(True)
    # pydicom's validation warnings quote the value; invalid values are answered with a status (receiving) or
    # repaired or left out with a note naming the attribute (results), so they would only repeat PHI.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
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
