"""Compiled reads: a plannable query runs as one SQL statement that builds the ``data`` JSON itself.

The rule: a POSTed JSON query whose document parses and validates, and whose every selected field is
in the plannable part of the schema (``leads``, ``lead``, ``node`` of a Lead, ``pipeline``,
``pipelines``; the stored fields of Lead, Stage, User and Pipeline, their to-one relations, a lead
connection's ``edges``/``nodes``/``cursor``/``pageInfo``/``totalCount``/``totalValue``), with
arguments the resolvers accept, is answered from a plan. Anything else, and anything the plan would
answer with an error, goes to Strawberry unchanged: the plan is an optimisation, and Strawberry's
answer is the reference.

- :mod:`.planner`: a validated operation → :class:`~.planner.OperationPlan` (what is selected, where);
- :mod:`.sql`: a plan and its arguments → one statement per dialect;
- :mod:`.runner`: the request → cache, cost and throttle, statement, the response's bytes;
- :mod:`.writes`: lead changes (``moveLead``, ``updateLead``, ``closeLead``, ``reopenLead``) made on the
  direct write path and answered from the lead written, read through the same cache, cost and throttle.
"""

from __future__ import annotations

from pipegraph.api.plans.runner import PlannedReads

__all__ = ["PlannedReads"]
