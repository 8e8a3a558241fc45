"""DICOM networking shared by receiving and delivering: the upper layer, statuses, the C-STORE and C-ECHO SCU, TLS."""
