"""The hand-written parts of the receive path agree with the libraries they stand in for: DIMSE command
sets with pynetdicom/pydicom, the index's driver-level SQL with the ORM's view of the rows."""

from __future__ import annotations

import datetime as dt
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode

from node.db import Instance, Series, SeriesState, Study, open_database, utcnow
from node.receive.instances import KnownSeries, Received, record_instance
from node.receive.dataset import Identifiers
from node.dicom.upper_layer.dimse import MessageAssembler, decode_command, encode_response
from node.dicom.upper_layer.pdu import ProtocolError, p_data


def _pynetdicom_store_rq(instance_uid: str, message_id: int) -> bytes:
    request = C_STORE()
    request.MessageID = message_id
    request.AffectedSOPClassUID = CTImageStorage
    request.AffectedSOPInstanceUID = instance_uid
    request.Priority = 0
    request.DataSet = BytesIO(b"x")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    return encode(message.command_set, True, True)


def test_store_request_encoded_by_pynetdicom_is_read() -> None:
    command = decode_command(_pynetdicom_store_rq("1.2.3.45", 513))
    assert (command.command_field, command.message_id) == (0x0001, 513)
    assert (command.affected_sop_class_uid, command.affected_sop_instance_uid) == (CTImageStorage, "1.2.3.45")
    assert command.has_data_set


def test_echo_request_has_no_data_set() -> None:
    request = C_ECHO()
    request.MessageID = 9
    request.AffectedSOPClassUID = "1.2.840.10008.1.1"
    message = C_ECHO_RQ()
    message.primitive_to_message(request)
    command = decode_command(encode(message.command_set, True, True))
    assert (command.command_field, command.message_id, command.has_data_set) == (0x0030, 9, False)


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xC211])
def test_response_decodes_with_pydicom_as_pynetdicom_would_send_it(status: int) -> None:
    request = decode_command(_pynetdicom_store_rq("1.2.3.456", 77))  # odd-length UID gets padded
    response = decode(BytesIO(encode_response(request, status)), True, True)
    assert response.CommandField == 0x8001 and response.MessageIDBeingRespondedTo == 77
    assert response.Status == status and response.CommandDataSetType == 0x0101
    assert response.AffectedSOPClassUID == CTImageStorage and response.AffectedSOPInstanceUID == "1.2.3.456"
    encoded = encode_response(request, status)
    assert response.CommandGroupLength == len(encoded) - 12


def test_message_fragmented_to_tiny_pdus_reassembles() -> None:
    command = _pynetdicom_store_rq("1.2.3.4", 1)
    data_set = bytes(range(256)) * 40
    stream = p_data(1, 0x03, command, 64) + p_data(1, 0x02, data_set, 100)
    assembler = MessageAssembler({1})
    messages = []
    offset = 0
    while offset < len(stream):
        length = int.from_bytes(stream[offset + 2 : offset + 6], "big")
        messages += assembler.feed(memoryview(stream)[offset + 6 : offset + 6 + length])
        offset += 6 + length
    assert len(messages) == 1 and bytes(messages[0].data_set or b"") == data_set
    assert not assembler.in_progress


def test_truncated_command_set_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="command set"):
        decode_command(_pynetdicom_store_rq("1.2.3.4", 1)[:-3])


def _received(series_uid: str, instance_uid: str, size: int = 100) -> Received:
    ids = Identifiers(CTImageStorage, instance_uid, "1.2.9", series_uid, "CT", "ACC1")
    return Received(ids, "1.2.840.10008.1.2.1", f"/x/{instance_uid}.dcm", size, "SCANNER", "PACSNODE", "127.0.0.1")


def test_index_rows_read_back_through_the_orm(tmp_path: Path) -> None:
    database = open_database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    known = KnownSeries()
    before = utcnow()
    with database.engine.begin() as connection:
        assert record_instance(connection, _received("1.2.9.1", "1.2.9.1.1"), known)
    known.add("1.2.9.1")
    with database.engine.begin() as connection:
        assert record_instance(connection, _received("1.2.9.1", "1.2.9.1.2"), known)
    with database.session() as session:  # a re-send through a session: no new row, size refreshed
        assert not record_instance(session, _received("1.2.9.1", "1.2.9.1.2", size=200), known)
    with database.session() as session:
        series = session.get(Series, "1.2.9.1")
        assert series is not None and series.instance_count == 2 and series.state == SeriesState.receiving
        assert isinstance(series.last_received_at, dt.datetime) and series.last_received_at >= before
        assert (series.calling_ae_title, series.called_ae_title, series.calling_host) == ("SCANNER", "PACSNODE",
                                                                                          "127.0.0.1")
        instance = session.get(Instance, "1.2.9.1.2")
        assert instance is not None and instance.size_bytes == 200 and instance.received_at >= before
        study = session.get(Study, "1.2.9")
        assert study is not None and study.accession_number == "ACC1"
        series.state, series.completed_at = SeriesState.complete, utcnow()
    with database.engine.begin() as connection:
        assert record_instance(connection, _received("1.2.9.1", "1.2.9.1.3"), known)
    with database.session() as session:
        series = session.get(Series, "1.2.9.1")
        assert series is not None and series.state == SeriesState.receiving and series.completed_at is None
        assert series.state_reason == "reopened by a late instance" and series.instance_count == 3
    database.dispose()
