"""The fast path: storage, verification and C-FIND associations served on the raw socket.

Why: with pynetdicom's protocol machine a C-STORE cost about 2.5 ms of Python work beyond storing
it (bench/ingest, 64x64 instances over one ``storescu`` association: ~225-260 instances/s through
pynetdicom, ~620-660/s through this module, DCMTK's ``storescp`` ~3,000-5,000/s without any
fsync), and a C-FIND answer ~0.8 ms (bench/find). Each association runs two polling threads
(``time.sleep(0.001)`` loops in the DUL and in the association reactor, handing PDUs over
queues), every PDU and DIMSE command set is decoded into objects through pydicom, and every
response is encoded the same way. An association that only sends instances or queries needs none
of that: this module reads its PDUs in the connection's own thread, reassembles the command and
data set fragments, calls the same bound ``EVT_C_STORE`` / ``EVT_C_ECHO`` handlers through
:func:`pynetdicom.events.trigger` (C-FIND: the same decisions, see
:mod:`appliance.dicom.fast.find`), and writes the response bytes directly
(:mod:`appliance.dicom.fast.dimse`).

Which associations: an A-ASSOCIATE-RQ whose every proposed abstract syntax is Verification, what
pynetdicom's unrestricted storage negotiation treats as storage, or Patient Root / Study Root /
Modality Worklist FIND (only while the bound ``EVT_C_FIND`` handler is the appliance's own), with
no extended negotiation (no role selection, asynchronous operations window, user identity, SOP
class extended negotiation), which the association policy accepts (calling AE, called AE,
association limit), while ``[dicom] fast_path = true`` (the default) and no low-level event handler
(PDU, DIMSE, FSM logging) is bound; the server says at start when a bound handler turns it off.
Everything else (C-MOVE, C-GET and its storage roles, MPPS, rejections, malformed requests) is
handed to pynetdicom unchanged: the A-ASSOCIATE-RQ bytes already read travel with the socket
(:class:`~appliance.dicom.fast.accept.Prefixed`) and :class:`appliance.dicom.server.FastSocket` reads
them first, so pynetdicom sees the connection as if it had read it itself.

Kept as pynetdicom does it: presentation context negotiation (pynetdicom's own functions, same
supported contexts, the contexts of services the calling AE has no right to refused as
the pynetdicom path does (one
:class:`~appliance.dicom.policy.AssociationPolicy` decides for both)), the A-ASSOCIATE-AC (pynetdicom's PDU classes),
the association limit shared with pynetdicom's associations, ARTIM (``acse_timeout``) before the
request and after a release, ``network_timeout`` while idle, A-ABORT on unexpected PDUs, invalid
contexts or unsupported commands, TLS sockets, and the notification events our server binds
(established, released, aborted, connection closed), so the logging and
:meth:`Appliance.association_ended` stay the same.

Modules: :mod:`~appliance.dicom.fast.accept` (the new connection: read the A-ASSOCIATE-RQ, choose the
path), :mod:`~appliance.dicom.fast.association` (negotiation and the association's PDU loop),
:mod:`~appliance.dicom.fast.dimse` (command sets and P-DATA-TF by hand), :mod:`~appliance.dicom.fast.find`
(C-FIND answers), :mod:`~appliance.dicom.fast.codec` (C-FIND identifiers written from index rows),
:mod:`~appliance.dicom.fast.wire` (socket reads and writes). pynetdicom's private names are reached only
through :mod:`appliance.dicom.compat`.
"""

from appliance.dicom.fast.accept import MAX_REQUEST, Prefixed, Unassociated, serve, take_prefix
from appliance.dicom.fast.association import FastAssociation, Registry
from appliance.dicom.fast.wire import abort_pdu, recv_exact

__all__ = [
    "MAX_REQUEST",
    "FastAssociation",
    "Prefixed",
    "Registry",
    "Unassociated",
    "abort_pdu",
    "recv_exact",
    "serve",
    "take_prefix",
]
