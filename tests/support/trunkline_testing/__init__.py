"""Trunkline's test harness: real services started on loopback, SIP peers
played by sipp, recordings. Used by tests/, molecule's verifiers and the
benchmarks; never shipped with the trunkline package."""
