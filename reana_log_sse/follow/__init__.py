"""The follow room: from a commit's NOTIFY to the reader's socket.

- hub.py: one LISTEN connection per replica, new rows read once per workflow and fanned
  out to subscriptions bounded in bytes;
- queue.py: what a follower is handed (batches, statuses, end, pings), queued per
  follower in a Subscription bounded in lines and bytes;
- handoff.py: a local commit's lines handed to the feeds without a read;
- direct.py: live batches written by the feed straight to caught-up followers' sockets;
- stream.py: GET .../logs/stream (catch-up from the database, then live);
- sse.py: the Server-Sent Events response (sse-starlette, one task per stream);
- read.py: GET .../logs as json and text.

May import: store, settings, metrics, auth, params, server.
"""
