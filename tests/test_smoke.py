from __future__ import annotations

import uuid

from tests.helpers import Follower, event, post_batch


async def test_smoke(live_server):
    wf = uuid.uuid4()
    r = post_batch(live_server.url, live_server.ingest_token, [event(wf, f"line {i}") for i in range(5)])
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 5, "duplicates": 0, "rejected": 0}
    async with Follower(f"{live_server.url}/api/workflows/{wf}/logs/stream") as f:
        await f.wait_logs(5)
        post_batch(live_server.url, live_server.ingest_token, [event(wf, f"live {i}") for i in range(3)])
        await f.wait_logs(8)
    assert f.ids == list(range(1, 9))
