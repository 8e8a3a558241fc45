"""No header value in the log, whoever writes it: pydicom's and highdicom's own warnings (their real code), the
text of their exceptions in tracebacks and in pacsnode's lines, in plain and JSON logging alike."""

from __future__ import annotations

import io
import json
import logging
import warnings
from collections.abc import Iterator

import pytest
from pydicom import config
from pydicom.valuerep import DA, validate_value

from node.config import LoggingConfig
from node.operate.logging_setup import configure_logging
from node.operate.redaction import describe_error, is_foreign

BAD_DATE, NAME = "19010203x", "Qzxwvkj"  # passed by name: a traceback prints the calling code line


@pytest.fixture(params=[False, True], ids=["text", "json"])
def log_stream(request: pytest.FixtureRequest) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    # An earlier test in this process may have captured warnings and left pytest to restore showwarning:
    # logging then believes it still captures them and would not hook in again.
    logging.captureWarnings(False)
    configure_logging(LoggingConfig(level="INFO", json=request.param), stream=stream)
    try:
        yield stream
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)


def _unable_to_convert() -> ValueError:
    try:
        DA(BAD_DATE)
    except ValueError as exc:
        return exc
    raise AssertionError("pydicom took an invalid date")


def test_library_warnings_and_exceptions_hold_no_value(log_stream: io.StringIO) -> None:
    from highdicom.valuerep import check_person_name

    with warnings.catch_warnings():  # shown every time: an earlier test may have shown these once already
        warnings.simplefilter("always")
        validate_value("DA", BAD_DATE, config.WARN)  # pydicom: a warning and a log record, both quoting it
        check_person_name(NAME)  # highdicom: 'The string "<name>" is unlikely to represent ...'
    own = logging.getLogger("node.jobs.runner")
    error = _unable_to_convert()
    own.error("job 7: failed permanently: %s", error)
    try:
        raise RuntimeError("results do not fit the series") from error
    except RuntimeError:
        own.exception("job 7: failed")
    text = log_stream.getvalue()
    assert "(value withheld)" in text and "Unable to convert" in text and "unlikely to represent" in text
    for value in (BAD_DATE, NAME):
        assert value not in text
    if text.startswith("{"):
        records = [json.loads(line) for line in text.splitlines()]
        assert any("exception" in record for record in records)


def test_pacsnode_own_lines_keep_their_words(log_stream: io.StringIO) -> None:
    logging.getLogger("node.deliver.attempt").warning("destination %s: %s", "pacs", "not configured ('pacs')")
    assert "('pacs')" in log_stream.getvalue()


def test_an_exception_is_foreign_when_a_library_raised_it() -> None:
    assert is_foreign(_unable_to_convert())
    assert not is_foreign(ValueError("pacsnode's own 'words'"))
    assert describe_error(_unable_to_convert()).startswith("ValueError: Unable to convert (value withheld)")
