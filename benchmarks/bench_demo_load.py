"""The demo page under load: stalled clients, then a bounded burst of uploads on 127.0.0.1 while the page is fetched.

The demo app (``python -m artmove.demo``'s) serves tf_efficientnet_lite0 (random init: the same
compute as a trained one) at 224 px in a uvicorn thread, with its default limits (max_parallel 1,
max_waiting 16, upload_timeout_s BENCH_DEADLINE = 30). First BENCH_STALLED (64) connections send the
headers and the start of an upload, then nothing; then BENCH_REQUESTS (40) uploads of a
wikipaintings_small painting go out BENCH_PARALLEL (8) at a time, and ``GET /`` is fetched every
0.25 s until they are done. Reported: each upload's latency (p50, p90, max) and status, the page's
response times during the burst, and when each stalled client was answered 408 and dropped.
Targets: every real upload answered (200, or 503/408 within 2 s), the page under 2 s throughout,
the stalled clients dropped at their deadline.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from artmove.data.sources import RastaWikiPaintings
from artmove.serving.demo_app import create_app
from artmove.serving.predictor import Predictor
from benchmarks import DATA
from benchmarks.measure import classifier, serving_in_thread, setting, stalled_upload

REQUESTS = setting("REQUESTS", 40)
PARALLEL = setting("PARALLEL", 8)
STALLED = setting("STALLED", 64)
DEADLINE = setting("DEADLINE", 30)


def percentile(values: list[float], share: float) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1], 2)


def run() -> dict:
    import httpx

    model = classifier("tf_efficientnet_lite0", 0.0, 224).eval()
    predictor = Predictor(model.network, [str(i) for i in range(25)], model.preprocessing)
    painting = RastaWikiPaintings(DATA / "wikipaintings_small").split_samples["test"][0][0]
    data = painting.read_bytes()
    app = create_app(predictor, {"Model": "tf_efficientnet_lite0"}, upload_timeout_s=DEADLINE)
    latencies, statuses, page = [], [], []
    with serving_in_thread(app) as url, httpx.Client(timeout=600) as client:
        stalled = [stalled_upload(url, DEADLINE + 60) for _ in range(STALLED)]

        def upload(_) -> None:
            started = time.perf_counter()
            statuses.append(client.post(f"{url}/predict", files={"file": (painting.name, data, "image/jpeg")}).status_code)
            latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        with ThreadPoolExecutor(PARALLEL) as pool:
            burst = [pool.submit(upload, i) for i in range(REQUESTS)]
            while not all(job.done() for job in burst):
                asked = time.perf_counter()
                httpx.get(url, timeout=60).raise_for_status()
                page.append(time.perf_counter() - asked)
                time.sleep(0.25)
        wall = time.perf_counter() - started
        for outcome in stalled:
            outcome["thread"].join(DEADLINE + 60)
    dropped = [o["seconds"] for o in stalled if o["reply"].startswith(b"HTTP/1.1 408") and "seconds" in o]
    row = {
        "stalled": STALLED,
        "stalled_408": len(dropped),
        "stalled_dropped_max_s": round(max(dropped), 2) if dropped else None,
        "deadline_s": DEADLINE,
        "requests": REQUESTS,
        "parallel": PARALLEL,
        "ok": statuses.count(200),
        "statuses": {str(code): statuses.count(code) for code in sorted(set(statuses))},
        "upload_p50_s": percentile(latencies, 0.5),
        "upload_p90_s": percentile(latencies, 0.9),
        "upload_max_s": round(max(latencies), 2),
        "page_fetches": len(page),
        "page_p50_s": percentile(page, 0.5),
        "page_max_s": round(max(page), 3),
        "burst_s": round(wall, 1),
        "target": "page < 2 s; every upload answered; stalled clients dropped at their deadline",
        "met": max(page) < 2.0 and len(statuses) == REQUESTS and len(dropped) == STALLED and max(dropped) < DEADLINE + 2,
    }
    return {
        "settings": {"backbone": "tf_efficientnet_lite0", "image_size": 224, "max_parallel": 1, "painting": painting.name},
        "rows": [row],
        "summary": f"{STALLED} stalled clients, then {REQUESTS} uploads, {PARALLEL} at a time: {row['statuses']}, "
        f"p50 {row['upload_p50_s']} s, "
        f"p90 {row['upload_p90_s']} s; the page answered in at most {row['page_max_s']} s during the {row['burst_s']} s burst; "
        f"{len(dropped)}/{STALLED} stalled clients answered 408 and dropped by {row['stalled_dropped_max_s']} s (deadline {DEADLINE} s)",
    }
