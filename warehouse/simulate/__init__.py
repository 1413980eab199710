"""Faithful local servers for each vendor protocol (tests, demo, benchmarks)."""
