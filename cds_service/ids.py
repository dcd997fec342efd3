"""Identifiers for cards, suggestions and audit records: UUID version 7 (RFC 9562).

A version 7 UUID starts with its creation time in milliseconds, so ids made one after another
sort one after another. The audit tables are keyed by these ids: new rows go at the end of each
B-tree index instead of at random places, which halves the cost of an audit insert and keeps it
flat as the tables grow (see README, Benchmarks). The other 74 bits are random, with a counter
for ids made in the same millisecond (RFC 9562, method 2), so ids are unique and in order; they
reveal when the card was issued, which the card says anyway. uuid-utils (Rust) makes one in about
half a microsecond.
"""
from __future__ import annotations

from uuid_utils import uuid7


def new_id() -> str:
    return str(uuid7())
