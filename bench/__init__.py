"""Benchmarks, run by hand (never by CI). Each prints its figures as JSON on stdout."""
