"""Receive: the DICOM SCP, durable storage of each instance and its index row, before Success is answered."""
