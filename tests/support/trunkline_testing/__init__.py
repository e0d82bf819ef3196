"""Trunkline's test harness: real services started on loopback, SIP peers
played by sipp, recordings. Used by tests/, molecule's verifiers and the
benchmarks; never shipped with the trunkline package."""

from pathlib import Path

# The checkout under test: make venv installs this package editable, so it
# runs from tests/support/trunkline_testing/ of that checkout.
ROOT = Path(__file__).resolve().parents[3]
