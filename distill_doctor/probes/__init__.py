"""The probes: one module per failure mode, imported explicitly by the diagnosis in debug order.

Each probe module follows one contract (:mod:`distill_doctor.probes.base`): ``measure(inputs)``
returns a frozen ``<Probe>Measured`` record (what was measured, no verdict), ``decide(measured,
RULE, alpha)`` returns a :class:`~distill_doctor.probes.base.Ruling`, ``summarize(measured,
ruling)`` writes the :class:`~distill_doctor.probes.base.Finding`, and ``run(inputs)`` chains the
three as the ``PROBE``'s entry point. ``RULE`` is the rule as data: its ``as_metrics`` is what the
finding records about its thresholds and its ``describe`` is the README table's "fails when" cell.
"""
