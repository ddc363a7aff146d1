"""The demo page under load: a bounded burst of uploads on 127.0.0.1 while the page is fetched.

The demo app (``python -m artmove.demo``'s) serves tf_efficientnet_lite0 (random init: the same
compute as a trained one) at 224 px in a uvicorn thread; BENCH_REQUESTS (40) uploads of a
wikipaintings_small painting go out BENCH_PARALLEL (8) at a time, and ``GET /`` is fetched every
0.25 s until they are done. Reported: each upload's latency (p50, p90, max), its status, and the
page's response times during the burst. Target: the page under 2 s throughout.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from artmove.data.sources import RastaWikiPaintings
from artmove.serving.demo_app import create_app
from artmove.serving.predictor import Predictor
from benchmarks import DATA
from benchmarks.measure import classifier, serving_in_thread, setting

REQUESTS = setting("REQUESTS", 40)
PARALLEL = setting("PARALLEL", 8)


def percentile(values: list[float], share: float) -> float:
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1], 2)


def run() -> dict:
    import httpx

    model = classifier("tf_efficientnet_lite0", 0.0, 224).eval()
    predictor = Predictor(model.network, [str(i) for i in range(25)], model.preprocessing)
    painting = RastaWikiPaintings(DATA / "wikipaintings_small").split_samples["test"][0][0]
    data = painting.read_bytes()
    app = create_app(predictor, {"Model": "tf_efficientnet_lite0"})
    latencies, statuses, page = [], [], []
    with serving_in_thread(app) as url, httpx.Client(timeout=600) as client:

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
    row = {"requests": REQUESTS, "parallel": PARALLEL, "ok": statuses.count(200), "upload_p50_s": percentile(latencies, 0.5),
           "upload_p90_s": percentile(latencies, 0.9), "upload_max_s": round(max(latencies), 2), "page_fetches": len(page),
           "page_p50_s": percentile(page, 0.5), "page_max_s": round(max(page), 3), "burst_s": round(wall, 1),
           "target": "page < 2 s", "met": max(page) < 2.0}  # fmt: skip
    return {
        "settings": {"backbone": "tf_efficientnet_lite0", "image_size": 224, "max_parallel": 1, "painting": painting.name},
        "rows": [row],
        "summary": f"{REQUESTS} uploads, {PARALLEL} at a time: p50 {row['upload_p50_s']} s, p90 {row['upload_p90_s']} s; "
                   f"the page answered in at most {row['page_max_s']} s during the {row['burst_s']} s burst",
    }
