"""Completion rules with the default settings, judged on a real index at chosen moments (no waiting).

Instances are indexed as the receiver indexes them (``record_instance``) and associations closed as the
receiver closes them, then ``tick`` is asked at a given time: what a hospital's default configuration does
one second before and after each boundary.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, generate_uid
from sqlalchemy import select

from node.assemble.completion import resume, tick
from node.config import Settings
from node.db import Database, NodeEvent, Series, SeriesAssociation, SeriesState, Study, open_database, utcnow
from node.receive.dataset import Identifiers
from node.receive.instances import Received, close_association_evidence, record_instance

DEFAULTS = Settings()  # settle 2 s, quiet 60 s, mode association


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = open_database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    yield database
    database.dispose()


class Sender:
    """Indexes instances of one series as associations carry them."""

    def __init__(self, database: Database, calling: str = "SCANNER") -> None:
        self.database, self.calling = database, calling
        self.study_uid, self.series_uid = generate_uid(), generate_uid()

    def send(self, association_id: str, count: int, *, first: bool = True) -> None:
        for index in range(count):
            ids = Identifiers(CTImageStorage, generate_uid(), self.study_uid, self.series_uid, "CT", "ACC1")
            received = Received(ids, "1.2.840.10008.1.2.1", f"/x/{ids.sop_instance_uid}.dcm", 100, self.calling,
                                "PACSNODE", "127.0.0.1", association_id, first and index == 0)
            with self.database.engine.begin() as connection:
                assert record_instance(connection, received)

    def end(self, association_id: str, outcome: str = "released") -> None:
        close_association_evidence(self.database, association_id, outcome)

    def series(self) -> Series:
        with self.database.session() as session:
            return session.get(Series, self.series_uid)

    def last(self) -> dt.datetime:
        return self.series().last_received_at


def later(start: dt.datetime, seconds: float) -> dt.datetime:
    return start + dt.timedelta(seconds=seconds)


def completes_only_after_the_quiet_period(sender: Sender, settings: Settings = DEFAULTS) -> None:
    """Nothing at 59 s after the series' last instance (or the restart that reset it); complete at 60 s."""
    last = sender.last()
    assert tick(settings, sender.database, now=later(last, 59)) == 0
    assert tick(settings, sender.database, now=later(last, 60.1)) == 1
    assert sender.series().completed_by.value == "quiet"


def test_released_association_completes_after_the_default_settle_time(database: Database) -> None:
    sender = Sender(database)
    sender.send("a1", 5)
    sender.end("a1")
    ended = utcnow()
    assert tick(DEFAULTS, database, now=later(ended, 1.9)) == 0
    assert tick(DEFAULTS, database, now=later(ended, 2.1)) == 1
    series = sender.series()
    assert (series.state, series.completed_by.value) == (SeriesState.complete, "association")
    assert series.state_reason == "complete: its association was released, then 2 s without an instance"
    with database.session() as session:
        assert session.get(Study, sender.study_uid).completed_at is not None  # its only series is complete
        assert session.scalars(select(SeriesAssociation)).all() == []  # the evidence is spent


def test_open_association_holds_the_series_until_the_default_quiet_period(database: Database) -> None:
    sender = Sender(database)
    sender.send("a1", 5)
    completes_only_after_the_quiet_period(sender)


def test_one_association_per_instance_waits_for_the_default_quiet_period(database: Database) -> None:
    sender = Sender(database)
    for number in range(4):
        sender.send(f"a{number}", 1)
        sender.end(f"a{number}")
    completes_only_after_the_quiet_period(sender)


def test_aborted_association_gives_no_evidence(database: Database) -> None:
    sender = Sender(database)
    sender.send("a1", 3)
    sender.end("a1", "aborted")
    completes_only_after_the_quiet_period(sender)


def test_two_associations_at_once_complete_when_both_are_released(database: Database) -> None:
    sender = Sender(database)
    sender.send("a1", 2)
    sender.send("b1", 2)
    sender.send("a1", 1, first=False)
    sender.end("a1")
    assert tick(DEFAULTS, database, now=later(utcnow(), 10)) == 0  # b1 is still open
    sender.end("b1")
    ended = utcnow()
    assert tick(DEFAULTS, database, now=later(ended, 2.1)) == 1
    assert sender.series().state_reason.startswith("complete: its 2 associations were released")


def test_instance_after_completion_reopens_and_is_counted(database: Database) -> None:
    sender = Sender(database, calling="MODALITY7")
    sender.send("a1", 3)
    sender.end("a1")
    assert tick(DEFAULTS, database, now=later(utcnow(), 2.1)) == 1
    sender.send("a2", 1)
    series = sender.series()
    assert (series.state, series.reopen_count, series.instance_count) == (SeriesState.receiving, 1, 4)
    assert series.completed_at is None and series.reopened_at is not None
    with database.session() as session:
        assert session.get(Study, sender.study_uid).completed_at is None
        event = session.scalars(select(NodeEvent).where(NodeEvent.kind == "series_reopened")).one()
    assert event.calling_ae_title == "MODALITY7" and event.level == "warning"
    assert "declared complete by the association rule" in event.message
    sender.end("a2")
    assert tick(DEFAULTS, database, now=later(utcnow(), 2.1)) == 1  # a2 alone is the evidence now


def test_restart_sets_the_evidence_aside(database: Database) -> None:
    sender = Sender(database)
    sender.send("a1", 3)
    sender.end("a1")
    resume(DEFAULTS, database)  # the node restarted before the settle time passed
    completes_only_after_the_quiet_period(sender)


def test_sender_with_quiet_mode_ignores_its_released_associations(database: Database) -> None:
    settings = Settings(senders=[{"ae_title": "ONEBYONE", "completion": {"mode": "quiet"}}])
    sender = Sender(database, calling="ONEBYONE")
    sender.send("a1", 3)
    sender.end("a1")
    completes_only_after_the_quiet_period(sender, settings)


def _index_files(database: Database, files: list[Path], association_id: str) -> str:
    """Index real files as one association carries them; the series UID."""
    import pydicom

    for index, path in enumerate(files):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        ids = Identifiers(ds.SOPClassUID, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, "CT", None)
        with database.engine.begin() as connection:
            record_instance(connection, Received(ids, "1.2.840.10008.1.2.1", str(path), 100, "SCANNER", "PACSNODE",
                                                 "127.0.0.1", association_id, index == 0))
    close_association_evidence(database, association_id, "released")
    return str(ds.SeriesInstanceUID)


@pytest.mark.parametrize(("routes", "rule"), [
    ([{"name": "mr", "match": {"Modality": "MR"}, "completion": {"mode": "quiet"}}], "association"),
    ([{"name": "ct", "match": {"Modality": "CT"}, "completion": {"mode": "quiet"}}], "quiet"),
    ([{"name": "ct", "match": {"Modality": "CT"}, "completion": {"settle_seconds": 30}},
      {"name": "any", "match": {}, "completion": {"settle_seconds": 10}}], "association after 30 s"),
])
def test_the_routes_matching_a_series_set_its_rule(database: Database, tmp_path: Path, routes: list, rule: str) -> None:
    from tests.support.dicom_factory import write_series

    settings = Settings(routes=routes)
    series_uid = _index_files(database, write_series(tmp_path / "in", 3), "a1")
    if rule == "association":
        assert tick(settings, database, now=later(utcnow(), 2.1)) == 1
    elif rule == "quiet":
        assert tick(settings, database, now=later(utcnow(), 30)) == 0
        assert tick(settings, database, now=later(utcnow(), 60.1)) == 1
    else:  # the most cautious of the matching routes
        assert tick(settings, database, now=later(utcnow(), 29)) == 0
        assert tick(settings, database, now=later(utcnow(), 30.1)) == 1
    with database.session() as session:
        assert session.get(Series, series_uid).completed_by.value == rule.split()[0]
