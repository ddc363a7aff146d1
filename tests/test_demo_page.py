"""`python -m artmove.demo`: the prediction function and bad uploads without a browser, then the page in
headless Chromium (Debian's chromium + chromium-driver) against `artmove.predict`."""

import base64
import contextlib
import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from artmove.predict import predict
from artmove.serving.demo_app import UploadError, create_app, headline_numbers, predict_upload, read_upload
from artmove.serving.predictor import Predictor
from benchmarks.measure import serving_in_thread, stalled_upload
from conftest import compose_config

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def painting(wikipaintings_small):
    return sorted((wikipaintings_small / "wikipaintings_test" / "Cubism").iterdir())[0]


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor.from_checkpoint(tiny_run)


@pytest.fixture(scope="module")
def client(predictor):
    headline = {"Model": "tf_efficientnet_lite0", "Test top-1": "12.3%"}
    return TestClient(create_app(predictor, headline, top_k=5, max_bytes=2_000_000, max_pixels=8_000_000))


def png(width, height):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "gray").save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_prediction_function_answers_as_the_predictor(predictor, painting):
    answer = predict_upload(predictor, painting.read_bytes(), tta="flip")
    expected = predictor(painting, tta="flip")
    assert [row["label"] for row in answer["top"]] == [m for m, _ in expected.top]
    assert [row["prob"] for row in answer["top"]] == pytest.approx([p for _, p in expected.top], abs=1e-4)
    overlay = Image.open(io.BytesIO(__import__("base64").b64decode(answer["gradcam"].split(",", 1)[1])))
    assert answer["gradcam"].startswith("data:image/png;base64,") and min(overlay.size) >= 224


def test_bad_uploads_get_a_message_not_a_trace():
    with pytest.raises(UploadError, match="not an image this page can read") as raised:
        read_upload(b"%PDF-1.4 not a painting", max_bytes=1000, max_pixels=10**6)
    assert raised.value.status == 400
    with pytest.raises(UploadError, match="the limit is 0 MB") as raised:  # 1000 bytes: 0 MB when rounded
        read_upload(b"x" * 1001, max_bytes=1000, max_pixels=10**6)
    assert raised.value.status == 413
    with pytest.raises(UploadError, match="2000 x 1000 pixels; the limit is 1 megapixels"):
        read_upload(png(2000, 1000), max_bytes=10**7, max_pixels=10**6)
    with pytest.raises(UploadError, match="could not be decoded"):
        read_upload(png(50, 50)[:-40], max_bytes=10**7, max_pixels=10**6)  # truncated
    assert read_upload(png(50, 40), max_bytes=10**7, max_pixels=10**6).size == (50, 40)


def test_the_page_and_its_endpoint(client, predictor, painting):
    page = client.get("/")
    assert page.status_code == 200 and '<input type="file" id="image"' in page.text
    assert "<span>Test top-1</span><b>12.3%</b>" in page.text and "up to 2 MB and 8 megapixels" in page.text
    answer = client.post("/predict", files={"file": ("a.jpg", painting.read_bytes(), "image/jpeg")}, data={"tta": "none"})
    assert answer.status_code == 200 and answer.json()["top"][0]["label"] == predictor(painting).label
    assert len(answer.json()["top"]) == 5
    not_image = client.post("/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert not_image.status_code == 400 and not_image.json() == {
        "error": "That file is not an image this page can read: upload a JPEG, PNG, WebP, GIF, BMP or TIFF."
    }
    huge = client.post("/predict", files={"file": ("big.png", png(4000, 2500), "image/png")})
    assert huge.status_code == 413 and "4000 x 2500 pixels" in huge.json()["error"]
    too_long = client.post("/predict", files={"file": ("big.bin", b"x" * 3_000_000, "image/png")})
    assert too_long.status_code == 413 and "over the 2 MB limit" in too_long.json()["error"]
    assert client.post("/predict", files={"file": ("a.jpg", painting.read_bytes())}, data={"tta": "ten_crop"}).status_code == 400


def test_the_headline_is_the_card_s_test_scores(tmp_path):
    from artmove.runs.facts import RunFacts

    results = {
        "test/top1": 0.61234,
        "test/top3": 0.8,
        "test/top5": 0.9012,
        "test/top1_macro": 0.55,
        "test/num_images": 440,
        "data": {"root": "/data/wikiart_sample"},
    }

    def facts(**results):
        return RunFacts(
            checkpoint=tmp_path / "best.ckpt",
            backbone="resnet50",
            head="linear",
            class_names=["a", "b"],
            preprocessing={},
            hparams={},
            finetune={},
            spec={},
            results=results,
        )

    assert headline_numbers(facts(**results)) == {
        "Model": "resnet50",
        "Movements": "2 (wikiart_sample)",
        "Test top-1": "61.2%",
        "Test top-5": "90.1%",
        "Top-1 macro": "55.0%",
        "Test images": "440",
        "Scores from": "the training run's test (results.json)",
    }
    assert headline_numbers(facts())["Test scores"] == "not tested"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(ckpt_path, log_dir):
    """The demo command (its own process: the real command line) serving ``ckpt_path`` on a free loopback port."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "artmove.demo", f"ckpt_path={ckpt_path}", f"port={port}", f"hydra.run.dir={log_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 240
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url, timeout=2).close()
                break
            if server.poll() is not None:
                pytest.fail(f"the demo exited with {server.returncode}: {server.stdout.read()[-3000:]}")
            if time.time() > deadline:
                pytest.fail("the demo page did not answer within 240 s")
            time.sleep(0.3)
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture(scope="module")
def demo_url(tiny_run, tmp_path_factory):
    with serving(tiny_run, tmp_path_factory.mktemp("demo")) as url:
        yield url


def test_the_demo_command_serves_the_card_headline_on_loopback(demo_url, tiny_run):
    page = urllib.request.urlopen(demo_url, timeout=10).read().decode("utf-8")
    assert "<span>Model</span><b>tf_efficientnet_lite0</b>" in page
    assert "<span>Movements</span><b>25 (wikipaintings_small)</b>" in page


needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="no chromium/chromedriver installed (.ci/install-browser installs them)"
)


def page_answers_in_chromium(url, painting, expected, screenshots) -> None:
    """Upload ``painting`` on the page in headless Chromium: the label, the top-k bars and the Grad-CAM are
    ``expected`` (predict's top-k rows); a text file then gets the page's message; the painting dropped on
    the page gets the same label."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1100,900"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # an explicit driver: no Selenium Manager download
    try:
        browser.get(url)
        label = browser.find_element(By.ID, "label")

        def settled(_):
            return label.get_attribute("data-state") in ("done", "error")

        browser.find_element(By.ID, "image").send_keys(str(painting.resolve()))
        WebDriverWait(browser, 120).until(settled)
        browser.save_screenshot(str(screenshots / "demo.png"))
        assert label.get_attribute("data-state") == "done", browser.find_element(By.ID, "message").text
        assert label.get_attribute("data-label") == expected[0]["movement"]
        assert label.text == expected[0]["movement"].replace("_", " ")
        bars = browser.find_elements(By.CSS_SELECTOR, "#topk .bar")
        assert [bar.find_element(By.TAG_NAME, "span").text for bar in bars] == [t["movement"].replace("_", " ") for t in expected]
        assert browser.find_element(By.ID, "gradcam").get_attribute("src").startswith("data:image/png;base64,")
        shown_set = json.loads(browser.find_element(By.ID, "set").get_attribute("data-movements"))  # the run's 90 % prediction set
        assert browser.find_element(By.ID, "set-line").is_displayed() and browser.find_element(By.ID, "set-level").text == "— 90 % sets"
        expected_set = (
            " or ".join(m.replace("_", " ") for m in shown_set)
            if len(shown_set) < 25
            else "Any of the 25 movements: the model cannot narrow this painting down"
        ) or "No movement is likely enough"
        assert browser.find_element(By.ID, "set").text == expected_set

        text_file = screenshots / "notes.txt"
        text_file.write_text("not a painting", encoding="utf-8")
        browser.find_element(By.ID, "image").send_keys(str(text_file))
        WebDriverWait(browser, 60).until(lambda _: label.get_attribute("data-state") == "error")
        browser.save_screenshot(str(screenshots / "demo-error.png"))
        assert browser.find_element(By.ID, "message").text.startswith("That file is not an image this page can read")

        # The same painting dragged onto the page: a drop event carrying it as a File, as a browser sends one.
        dragging = browser.execute_script(DROP, base64.b64encode(painting.read_bytes()).decode("ascii"), painting.name)
        assert dragging  # the drop box showed where it would land
        WebDriverWait(browser, 120).until(settled)
        assert label.get_attribute("data-state") == "done", browser.find_element(By.ID, "message").text
        assert label.get_attribute("data-label") == expected[0]["movement"]
        assert "dragging" not in browser.find_element(By.ID, "drop").get_attribute("class")
    finally:
        browser.quit()
    print(f"screenshots: {screenshots / 'demo.png'}, {screenshots / 'demo-error.png'}")


#: Drag a painting (base64 bytes, name) over the page and drop it: returns whether the drop box lit up.
DROP = """
const [data, name] = arguments;
const file = new File([Uint8Array.from(atob(data), c => c.charCodeAt(0))], name, {type: "image/jpeg"});
const transfer = new DataTransfer();
transfer.items.add(file);
const box = document.getElementById("drop");
box.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
const lit = box.classList.contains("dragging");
box.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
return lit;
"""


@needs_browser
def test_the_page_in_headless_chromium_shows_predicts_label(demo_url, tiny_run, painting, tmp_path):
    expected = predict(compose_config("predict", f"ckpt_path={tiny_run}", f"input={painting}", f"output_dir={tmp_path}", "num_workers=0"))[
        "predictions"
    ][0]["top"]
    page_answers_in_chromium(demo_url, painting, expected, tmp_path)


# --- under load ----------------------------------------------------------------------------------
class SlowNetwork(torch.nn.Module):
    """A network that takes ``seconds`` per forward (sleeping, as a large model computes: the GIL released)."""

    def __init__(self, network, seconds: float):
        super().__init__()
        self.network, self.seconds = network, seconds

    def forward_features(self, images):
        time.sleep(self.seconds)
        return self.network.forward_features(images)

    def forward_head(self, features, pre_logits=False):
        return self.network.forward_head(features, pre_logits)

    def forward(self, images):
        return self.forward_head(self.forward_features(images))


def test_a_chunked_upload_over_the_limit_is_refused_while_it_streams(predictor, tmp_path, monkeypatch):
    import tempfile

    import httpx

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where a spooled upload would land
    sent = [0]

    def fifty_megabytes():
        chunk = b"\0" * 65536
        while sent[0] < 50_000_000:
            sent[0] += len(chunk)
            yield chunk

    app = create_app(predictor, {"Model": "m"}, max_bytes=20_000_000)
    with serving_in_thread(app) as url:
        boundary = "artmoveboundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
        )

        def body():
            yield head
            yield from fifty_megabytes()

        try:
            answer = httpx.post(
                f"{url}/predict", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}, timeout=60
            )
        except httpx.TransportError as error:  # the server may close the stream once it has answered
            pytest.fail(f"no 413 answer: {error}")
        assert answer.status_code == 413 and "over the 20 MB limit" in answer.json()["error"]
        assert "transfer-encoding" not in answer.request.headers or answer.request.headers["transfer-encoding"] == "chunked"
    assert not list(tmp_path.iterdir())  # nothing of the upload written to disk


def test_the_page_answers_at_once_during_a_burst_of_predictions(predictor, painting):
    """8 uploads at once, each taking 0.6 s to classify (two forwards: the top-5 and the Grad-CAM): GET /
    keeps answering within 2 s (classified on the event loop, it waited for the uploads queued before it)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    slow = Predictor(SlowNetwork(predictor.network, 0.3), predictor.class_names, predictor.preprocessing)
    app = create_app(slow, {"Model": "m"}, max_parallel=1, max_waiting=32)
    data = painting.read_bytes()
    with serving_in_thread(app) as url, httpx.Client(timeout=120) as client:

        def upload(_):
            return client.post(f"{url}/predict", files={"file": ("p.jpg", data, "image/jpeg")}).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = pool.map(upload, range(8))
            page_seconds = []
            for _ in range(8):
                started = time.perf_counter()
                assert httpx.get(url, timeout=30).status_code == 200
                page_seconds.append(time.perf_counter() - started)
                time.sleep(0.3)
            assert list(statuses) == [200] * 8
    assert max(page_seconds) < 2.0, page_seconds


# --- what the page shows and who may hold it ---------------------------------------------------------
PAYLOAD = """<img src=x onerror="document.title='XSS'">"""


@pytest.fixture(scope="module")
def hostile_names(tiny_run, tmp_path_factory):
    """A copy of tiny_run's best checkpoint whose class names each carry an ``onerror`` payload."""
    from artmove.runs.checkpoints import open_run

    checkpoint = torch.load(open_run(tiny_run).files[0], map_location="cpu", weights_only=True)
    names = checkpoint["hyper_parameters"]["class_names"]
    checkpoint["hyper_parameters"]["class_names"] = [f"{PAYLOAD}{name}" for name in names]
    path = tmp_path_factory.mktemp("hostile") / "names.ckpt"
    torch.save(checkpoint, path)
    return path


class CountingRequests:
    """ASGI middleware counting each path the browser asks for (an injected ``<img src=x>`` would ask for ``/x``)."""

    def __init__(self, app):
        self.app, self.paths = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@needs_browser
def test_class_names_from_a_checkpoint_are_shown_as_text_and_never_run(hostile_names, painting, tmp_path):
    from artmove.demo import build_app

    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app = CountingRequests(build_app(compose_config("demo", f"ckpt_path={hostile_names}", "device=cpu")))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    with serving_in_thread(app) as url:
        headers = urllib.request.urlopen(url, timeout=10).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"] and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
        browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            browser.get(url + "/")
            title = browser.title
            browser.find_element(By.ID, "image").send_keys(str(painting.resolve()))
            label = browser.find_element(By.ID, "label")
            WebDriverWait(browser, 120).until(lambda _: label.get_attribute("data-state") in ("done", "error"))
            time.sleep(0.5)  # an injected image's error handler would have run by now
            browser.save_screenshot(str(tmp_path / "hostile-names.png"))
            assert label.get_attribute("data-state") == "done", browser.find_element(By.ID, "message").text
            shown = [bar.find_element(By.TAG_NAME, "span").text for bar in browser.find_elements(By.CSS_SELECTOR, "#topk .bar")]
            assert len(shown) == 5 and all(text.startswith(PAYLOAD.replace("_", " ")) for text in shown)  # the markup, as literal text
            assert label.text.startswith("<img src=x") and not browser.find_elements(By.CSS_SELECTOR, "#topk img, #label img")
            assert browser.title == title != "XSS"
        finally:
            browser.quit()
    assert set(app.paths) - {"/favicon.ico"} == {"/", "/demo.css", "/demo.js", "/predict"}, app.paths  # no request for /x


def test_stalled_uploads_cost_only_themselves_and_are_dropped_at_their_deadline(predictor, painting):
    """32 clients that start an upload and stall, then 8 real uploads: each real one is answered (200) while the
    stalled ones hold their connections; each stalled one gets 408 within its deadline (3 s here) and is closed."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    app = create_app(predictor, {"Model": "m"}, max_parallel=1, max_waiting=16, upload_timeout_s=3)
    data = painting.read_bytes()
    with serving_in_thread(app) as url:
        stalled = [stalled_upload(url) for _ in range(32)]
        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:

            def upload(_):
                started = time.perf_counter()
                status = client.post(f"{url}/predict", files={"file": ("p.jpg", data, "image/jpeg")}).status_code
                return status, time.perf_counter() - started

            answers = list(pool.map(upload, range(8)))
        assert [status for status, _ in answers] == [200] * 8, answers
        for outcome in stalled:
            outcome["thread"].join(30)
            reply = outcome["reply"].decode("latin-1")
            assert reply.startswith("HTTP/1.1 408") and "did not arrive within 3 s" in reply, reply[:300]
            assert outcome["seconds"] < 3 + 2, outcome["seconds"]  # answered and closed at the deadline (a margin for 2 cores)


def test_a_burst_is_admitted_exactly_as_the_settings_say(predictor, painting):
    """max_parallel=1 + max_waiting=3: of 12 uploads arriving at once while each takes ~1 s, 4 are answered and 8 get 503."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    slow = Predictor(SlowNetwork(predictor.network, 0.75), predictor.class_names, predictor.preprocessing)
    app = create_app(slow, {"Model": "m"}, max_parallel=1, max_waiting=3)
    data = png(64, 48)
    with serving_in_thread(app) as url, httpx.Client(timeout=60) as client, ThreadPoolExecutor(12) as pool:
        statuses = list(
            pool.map(lambda _: client.post(f"{url}/predict", files={"file": ("p.png", data, "image/png")}).status_code, range(12))
        )
    assert sorted(statuses) == [200] * 4 + [503] * 8, statuses
