"""The REANA room: the adapters that speak reana-server's language.

- server.py: the reana-server client (its Host, credentials, rate limits, failures);
- auth.py: auth=reana, asking reana-server who may read what (a TTL cache);
- logs.py: REANA's own logs request routed here, answered as reana-server would, with this
  service's lines; format.py: `format=reana`; route.py: GET .../logs with both beside
  follow/read.py's json and text.

May import: store, follow, bodies, settings, metrics, auth, params.
"""
