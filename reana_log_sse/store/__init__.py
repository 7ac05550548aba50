"""The store room: PostgreSQL, and everything that knows its tables.

- store.py: the write transactions (ingest, statuses, deletes) and one NOTIFY per commit;
- group.py: group commit (batches that arrive together share one transaction);
- rows.py: prepared lines and their COPY; identity.py: the dedupe digest's and line_key's
  inputs; lines.py: a stored line and its SSE frame;
- snapshot.py: the read side (a workflow's lines, statuses and ends, in id order);
- live.py: the feed's live read of new lines and statuses, in one statement;
- partitions.py: the daily partitions and retention; db.py: connections, migrations and
  the `sql/` files; embedded.py: the embedded PostgreSQL of `serve` and `demo`;
- errors.py: psycopg's errors translated, in one place, into HTTP answers.

May import: settings, metrics.
"""
