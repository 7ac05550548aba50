"""The ingest room: what arrives over HTTP and becomes stored lines and statuses.

- route.py: POST /ingest/vector (decode, validate, store, answer after commit);
- body.py: reading a body within its byte and time caps, decompressing, JSON or NDJSON;
- fastpath.py: msgspec's decoder for canonical batches; prepare.py: the Preparer both
  decoders feed, and the model path (models.py: the pydantic shapes at the edge);
- status.py: POST /api/workflows/{id}/status.

May import: store, bodies, settings, metrics, auth, params.
"""
