"""plan: an explicit lab → the ordered kernel operations that build it; pure and deterministic.

ops.py holds one frozen dataclass per operation (each renders as an ip(8)-like line and
knows its undo); build.py orders a lab's objects into them (`netlab up --dry-run` prints it).
"""
