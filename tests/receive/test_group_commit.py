"""Group commit: threads that finish together share one folder fsync and one index transaction, and
each still gets its own outcome."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from node.receive import commit as receive_commit
from node.db import Instance, open_database
from node.receive.instances import Received
from node.receive.commit import GroupCommit, NotDurable
from node.receive.dataset import Identifiers
from node.dicom.status import Status
from node.receive.handler import StoreHandler, StoreRequest
from tests.support.dicom_factory import dataset_bytes_after_meta, write_series


def received(number: int, folder: Path = Path("/storage"), series: str = "1.2.3.4") -> Received:
    ids = Identifiers("1.2.840.10008.5.1.4.1.1.2", f"1.2.3.4.5.{number}", "1.2.3", series, "CT", None)
    return Received(ids, "1.2.840.10008.1.2.1", str(folder / f"{number}.dcm"), 100, "SENDER", "PACSNODE",
                    "127.0.0.1")


class Index:
    """An index that takes its time, so that threads arriving meanwhile form a group."""

    def __init__(self, failing: set[str] = frozenset(), seconds: float = 0.05) -> None:
        self.failing = failing
        self.seconds = seconds
        self.groups: list[list[str]] = []
        self.rows: list[str] = []
        self.lock = threading.Lock()

    def index_group(self, group: list[Received]) -> list[bool]:
        uids = [item.ids.sop_instance_uid for item in group]
        time.sleep(self.seconds)
        with self.lock:
            self.groups.append(uids)
            if self.failing & set(uids):
                raise RuntimeError("constraint failed")  # the whole transaction rolls back
            self.rows.extend(uids)
        return [True] * len(group)

    def index_one(self, item: Received) -> bool:
        uid = item.ids.sop_instance_uid
        with self.lock:
            if uid in self.failing:
                raise RuntimeError(f"cannot index {uid}")
            self.rows.append(uid)
        return True


def commit_together(commits: GroupCommit, items: list[Received]) -> dict[str, object]:
    """Commit every item from its own thread, all at once; the outcome (True or the error) by UID."""
    outcomes: dict[str, object] = {}
    start = threading.Barrier(len(items))

    def run(item: Received) -> None:
        start.wait()
        try:
            outcomes[item.ids.sop_instance_uid] = commits.commit(item)
        except Exception as exc:
            outcomes[item.ids.sop_instance_uid] = exc

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads), "a committing thread never woke"
    return outcomes


def test_threads_arriving_together_share_a_transaction(tmp_path: Path) -> None:
    index = Index()
    commits = GroupCommit(index.index_group, index.index_one)
    items = [received(number, tmp_path) for number in range(8)]

    outcomes = commit_together(commits, items)

    assert outcomes == {item.ids.sop_instance_uid: True for item in items}
    assert sorted(index.rows) == sorted(item.ids.sop_instance_uid for item in items)
    assert len(index.groups) < len(items)  # the first thread committed alone, the others together
    assert max(len(group) for group in index.groups) > 1


def test_a_lone_thread_commits_alone(tmp_path: Path) -> None:
    index = Index(seconds=0)
    commits = GroupCommit(index.index_group, index.index_one)
    assert commits.commit(received(1, tmp_path)) is True
    assert index.rows == [received(1).ids.sop_instance_uid] and index.groups == []


def test_a_bad_row_fails_only_its_own_instance(tmp_path: Path) -> None:
    bad = received(3).ids.sop_instance_uid
    index = Index(failing={bad})
    commits = GroupCommit(index.index_group, index.index_one)
    items = [received(number, tmp_path) for number in range(6)]

    outcomes = commit_together(commits, items)

    assert isinstance(outcomes.pop(bad), RuntimeError)
    assert set(outcomes.values()) == {True}
    assert bad not in index.rows and len(index.rows) == 5


def test_a_folder_that_cannot_be_synced_fails_its_instances_only(tmp_path: Path) -> None:
    kept, vanished = tmp_path / "kept", tmp_path / "vanished"
    kept.mkdir()
    index = Index()
    commits = GroupCommit(index.index_group, index.index_one)
    items = [received(number, kept if number % 2 else vanished) for number in range(6)]

    outcomes = commit_together(commits, items)

    for item in items:
        outcome = outcomes[item.ids.sop_instance_uid]
        if Path(item.path).parent == vanished:
            assert isinstance(outcome, NotDurable) and "cannot fsync" in str(outcome)
        else:
            assert outcome is True
    assert sorted(index.rows) == sorted(item.ids.sop_instance_uid for item in items if Path(item.path).parent == kept)


def test_an_index_that_is_down_fails_every_waiting_instance(tmp_path: Path) -> None:
    def down(*_args: object) -> object:
        raise ConnectionError("index unreachable")

    commits = GroupCommit(down, down)
    outcomes = commit_together(commits, [received(number, tmp_path) for number in range(4)])
    assert all(isinstance(outcome, ConnectionError) for outcome in outcomes.values())
    with pytest.raises(ConnectionError):
        commits.commit(received(9, tmp_path))


def test_an_instance_is_renamed_then_its_folder_synced_then_indexed(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_series(tmp_path / "sent", 1)[0]
    database = open_database(f"sqlite:///{tmp_path / 'index.sqlite3'}")
    handler = StoreHandler(tmp_path / "storage", database)
    seen: list[tuple[Path, list[str], int]] = []
    real_sync = receive_commit.fsync_directory

    def sync(directory: Path) -> None:
        with database.session() as session:
            rows = session.scalar(select(func.count()).select_from(Instance))
        seen.append((directory, sorted(path.name for path in directory.iterdir()), rows))
        real_sync(directory)

    monkeypatch.setattr(receive_commit, "fsync_directory", sync)
    ds = dcmread(source)
    request = StoreRequest(dataset_bytes_after_meta(source), str(ds.file_meta.TransferSyntaxUID), ds.SOPClassUID,
                           ds.SOPClassUID, ds.SOPInstanceUID, "SENDER", "PACSNODE", "127.0.0.1", "1")

    assert handler.store(request) == Status.SUCCESS

    folder = tmp_path / "storage" / ds.StudyInstanceUID / ds.SeriesInstanceUID
    assert seen == [(folder, [f"{ds.SOPInstanceUID}.dcm"], 0)]  # renamed, not yet indexed
    with database.session() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 1
