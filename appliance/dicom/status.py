"""DIMSE status codes the handlers answer with (PS3.4, PS3.7 Annex C)."""

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
#: Refused: not authorized (PS3.7 C.5.x general status).
NOT_AUTHORIZED = 0x0124
#: Failure: processing failure (general).
PROCESSING_FAILURE = 0x0110
#: C-STORE: refused, out of resources.
OUT_OF_RESOURCES = 0xA700
#: C-STORE: error, cannot understand (0xC000-0xCFFF).
CANNOT_UNDERSTAND = 0xC000
#: C-FIND/C-MOVE/C-GET: identifier does not match SOP class.
IDENTIFIER_MISMATCH = 0xA900
#: C-FIND/C-MOVE/C-GET: unable to process.
UNABLE_TO_PROCESS = 0xC001
#: C-MOVE: refused, move destination unknown.
MOVE_DESTINATION_UNKNOWN = 0xA801
