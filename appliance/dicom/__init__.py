"""The DICOM front end: pynetdicom server, thin handlers, and the SCU side (echo, import)."""

from appliance.dicom import compat

# Every pynetdicom requestor in the process (our SCU, the C-MOVE sub-operations pynetdicom sends) needs it.
compat.install()
