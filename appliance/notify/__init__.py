"""Events that leave the box: the outbox (:mod:`.outbox`) and its publishers (AMQP: :mod:`.amqp`), and e-mail
alerts (:mod:`.email`: a queue of its own, sent by a background thread).

Events are recorded in the transaction of the change they report and delivered by
background threads, so an outside system that is down never slows or fails ingest.
The AMQP input queue (worklist orders in the manual's XML shapes, :mod:`.messages`)
lives here too, next to the one home of ``pika``.
"""
