"""The DICOM front end: pynetdicom server, thin handlers, and the SCU side (echo, import)."""
