"""Keeping header values out of log lines, job reasons and audit details, whatever wrote the text.

pacsnode's own messages name attributes and UIDs, never values. Libraries are not so careful: pydicom's
validation warnings, highdicom's person name warning and the texts of the exceptions they raise quote the
value they object to ("Invalid value for VR DA: '19010230'", 'The string "Doe" is unlikely...'). Such text is
passed on with every quoted part withheld: messages of other libraries' loggers and of Python warnings,
exception texts in tracebacks, and the text of any exception that was raised outside pacsnode.
"""

from __future__ import annotations

import logging
import re
from typing import Any

OWN_PACKAGES = frozenset({"node", "pipelines", "bench"})
WITHHELD = "(value withheld)"
_QUOTED = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


def redact(text: str) -> str:
    """``text`` with every quoted part withheld."""
    return _QUOTED.sub(WITHHELD, text)


def _raised_outside(exc: BaseException) -> bool:
    """True when the innermost frame that raised ``exc`` is not pacsnode's (a library's text may quote values)."""
    trace = exc.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    module = str(trace.tb_frame.f_globals.get("__name__", ""))
    return module.split(".")[0] not in OWN_PACKAGES


def is_foreign(exc: BaseException) -> bool:
    """True when ``exc``, or an exception it was raised from or during, was raised outside pacsnode."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _raised_outside(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def error_text(exc: BaseException) -> str:
    """The text of ``exc`` for a log line, a job reason or an audit detail: withheld quotes if it is foreign."""
    text = str(exc)
    return redact(text) if is_foreign(exc) else text


def describe_error(exc: BaseException) -> str:
    """``Type: text`` of ``exc``, as :func:`error_text` gives the text."""
    return f"{type(exc).__name__}: {error_text(exc)}"


def redact_traceback(text: str) -> str:
    """A formatted traceback with the exception lines' quotes withheld (the indented code lines are kept)."""
    return "\n".join(line if line.startswith(" ") else redact(line) for line in text.split("\n"))


class RedactingFilter(logging.Filter):
    """Withholds quoted values in records of other libraries and of Python warnings, and in the text of
    foreign exceptions that pacsnode's own records carry as arguments. Attach it to the handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] not in OWN_PACKAGES:
            record.msg, record.args = redact(record.getMessage()), None
        elif isinstance(record.args, tuple) and any(isinstance(arg, BaseException) for arg in record.args):
            record.args = tuple(_safe_argument(arg) for arg in record.args)
        return True


def _safe_argument(arg: Any) -> Any:
    return error_text(arg) if isinstance(arg, BaseException) else arg
