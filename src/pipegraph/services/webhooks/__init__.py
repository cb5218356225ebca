"""Webhooks: changes pushed to other systems, signed, retried, never lost.

``events`` records what happened into the outbox (``pipegraph.db.webhook_outbox``) with the change;
``endpoints`` manages receivers and reads the delivery log; ``addresses`` refuses private targets;
``signing`` signs per Standard Webhooks; ``dispatcher`` sends, in order per lead, at least once.
"""
