"""Reliability suites: kill points, network faults, hostile inputs, PHI scans, with figures.

Every suite reports to the shared figures of conftest.py, printed at the end of the run;
`BATCHBRIDGE_RELIABILITY=full` runs the full suites, otherwise a quick subset runs in
`make test`. Shared here: the Hypothesis profiles and the figures (conftest.py), the
hostile-input harness (hostile_harness.py), the kill-point lab (crash_helpers.py). May
import batchbridge, tests.support, tests.plugins and tests.integration's flow helpers.
"""
