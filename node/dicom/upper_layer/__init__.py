"""pacsnode's DICOM upper layer for receiving: PDUs read straight off the socket, one thread per association.

pynetdicom's reactors poll, which costs several milliseconds of CPU per received instance; this engine reads each PDU with
as few system calls and copies as it can and hands a whole encoded dataset to the store logic. The
parts that are not per-byte hot reuse pynetdicom: A-ASSOCIATE-RQ decoding, A-ASSOCIATE-AC/RJ encoding
and presentation-context negotiation.

``pdu`` reads and writes PDUs, ``acse`` negotiates an association, ``dimse`` assembles and answers
DIMSE messages, ``association`` runs one association, ``server`` accepts connections.
"""
