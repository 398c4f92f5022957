"""The hot path: reservations, commits, releases and moves of holds, applied in
batches (group commit). requests.py: what a caller asks and gets back;
queue.py: the batching queue and its admission; rules.py: each request
checked and applied to one transaction's working set (work.py); reads.py and
writes.py: that working set read and locked, and written back (on PostgreSQL
in one statement)."""
