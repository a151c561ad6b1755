"""Monitoring, as pure functions: the Prometheus alert rules rendered from a set of thresholds.

Like `postgres/`, nothing here imports Pulumi, `config` or `components` (a test checks the import
graph), so the rules file is rendered and tested (by promtool) without a stack.
"""
