"""The demo page: upload a painting, see the top-5 movements, the Grad-CAM overlay and the model's test scores.

One page, its script and style (``page/``, each from its own path) and one endpoint (``POST predict``);
the script draws the answer as text, never as HTML, and every response forbids any other script
(Content-Security-Policy), sniffing and framing: a class name a model file carries cannot act in the
browser. Uploads are checked before any pixel is decoded: size in bytes while the body streams (within
a deadline, and within a memory budget shared by all uploads), then image dimensions from the header;
predictions run off the event loop, a bounded number at once.
Needs the ``demo`` extra (fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from functools import partial
from importlib.resources import files
from typing import TYPE_CHECKING, Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image, UnidentifiedImageError
from starlette.formparsers import MultiPartException, MultiPartParser

from artmove.data.images import UnreadableImageError, load_rgb
from artmove.evaluation.tta import check_tta
from artmove.serving.predictor import Prediction, Predictor

if TYPE_CHECKING:  # the card is imported when a page needs its headline
    from artmove.runs.facts import RunFacts


class UploadError(ValueError):
    """An upload the page answers with a message: not an image, too large."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def read_upload(data: bytes, max_bytes: int, max_pixels: int, min_size: int | None = None) -> Image.Image:
    """The uploaded bytes as an upright RGB image, decoded as ``artmove.predict`` decodes a file (JPEG
    draft mode down to ``min_size``), or an UploadError saying what is wrong with them."""
    if len(data) > max_bytes:
        raise UploadError(f"The file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.", 413)
    if not data:
        raise UploadError("The file is empty: choose a painting (JPEG, PNG, WebP…).")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except (UnidentifiedImageError, OSError):
        raise UploadError("That file is not an image this page can read: upload a JPEG, PNG, WebP, GIF, BMP or TIFF.") from None
    if width * height > max_pixels:
        raise UploadError(f"The image is {width} x {height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels.", 413)
    try:
        # load_rgb reads it through Image.open, which takes a binary file too; its annotation names paths only.
        return load_rgb(io.BytesIO(data), min_size)  # type: ignore[arg-type]
    except UnreadableImageError as error:
        raise UploadError(f"The image could not be decoded ({error.__cause__}): it may be truncated or damaged.") from None


def predict_upload(
    predictor: Predictor, data: bytes, tta: str = "none", top_k: int = 5, max_bytes: int = 20_000_000, max_pixels: int = 50_000_000
) -> dict[str, Any]:
    """What the page shows for one upload: ``{"top": [{"label", "prob"}], "gradcam": data URL or None (an
    ensemble has no one network to explain), "uncertain": bool or None, "threshold", "set": the movements of
    its prediction set or None (no sets), "coverage": the sets' level}``."""
    check_tta(tta)
    image = read_upload(data, max_bytes, max_pixels, predictor.decode_size)
    prediction = predictor(image, top_k=top_k, tta=tta, gradcam=predictor.explains)
    assert isinstance(prediction, Prediction)  # one image in, one Prediction out
    gradcam = None
    if prediction.gradcam is not None:
        buffer = io.BytesIO()
        prediction.gradcam.save(buffer, format="PNG")
        gradcam = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return {
        "top": [{"label": label, "prob": prob} for label, prob in prediction.top],
        "gradcam": gradcam,
        "uncertain": prediction.uncertain,
        "threshold": predictor.threshold,
        "set": prediction.set,
        "movements": len(predictor.class_names),
        "coverage": prediction.coverage,
        "tta": tta,
    }


#: What a request may hold besides the file: multipart boundaries, part headers, the tta field.
FORM_OVERHEAD = 64 * 1024
#: Sent with every response: no script but the page's own (served from its own path), no plugin, no frame,
#: images only from the page or the Grad-CAM's data URL, requests only to the page's origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
ASSETS = {"demo.js": "text/javascript; charset=utf-8", "demo.css": "text/css; charset=utf-8"}


class Admission:
    """How many uploads the page holds: ``classifying`` (at most ``max_parallel`` at once, the others waiting
    for a turn, ``max_parallel + max_waiting`` in all; one more is answered 503) and the bytes of the
    uploads still arriving, within ``max_buffered`` (past it, 503 at once): a slow client holds only its
    own bytes, for at most the upload deadline."""

    def __init__(self, max_parallel: int, max_waiting: int, max_buffered: int):
        self.limit, self.admitted = max_parallel + max_waiting, 0
        self.max_buffered, self.buffered = max_buffered, 0


def create_app(
    predictor: Predictor,
    headline: Mapping[str, str],
    top_k: int = 5,
    max_bytes: int = 20_000_000,
    max_pixels: int = 50_000_000,
    max_parallel: int = 1,
    max_waiting: int = 16,
    upload_timeout_s: float = 30.0,
) -> FastAPI:
    """The FastAPI app: ``GET /`` the page (``/demo.js``, ``/demo.css``), ``POST /predict`` (multipart ``file``,
    form ``tta``) the answer.

    The body is counted while it streams, chunked or not: past the limit the request ends with 413 and
    no more of it is read; it is kept in memory, never written to disk. An upload that has not arrived
    whole within ``upload_timeout_s`` is answered 408 and dropped (a per-request deadline: anyio's
    cancel scope around the read, the server stack's own; uvicorn has no body timeout), so clients that
    stall cost only their own place. The bytes all uploads hold while arriving stay within
    ``(max_parallel + max_waiting) * max_bytes``. Predictions run in worker threads, ``max_parallel`` at
    once (torch releases the GIL), so the page and other requests keep answering while paintings are
    classified; ``max_parallel + max_waiting`` uploads are admitted, one more gets 503."""
    app = FastAPI(title="artmove demo", docs_url=None, redoc_url=None, openapi_url=None)
    page = render_page(headline, max_bytes, max_pixels)
    assets = {name: (files("artmove.serving").joinpath("page", name).read_text(encoding="utf-8"), kind) for name, kind in ASSETS.items()}
    limiter = anyio.CapacityLimiter(max_parallel)
    admission = Admission(max_parallel, max_waiting, (max_parallel + max_waiting) * (max_bytes + FORM_OVERHEAD))

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.get("/{name}")
    def asset(name: str) -> Response:
        if name not in assets:
            return JSONResponse({"error": "Not found."}, status_code=404)
        text, kind = assets[name]
        return Response(text, media_type=kind)

    @app.post("/predict", response_model=None)  # None: as before the annotation (FastAPI would build a model of it)
    async def predict(request: Request) -> Response | dict[str, Any]:
        try:
            with anyio.fail_after(upload_timeout_s):
                data, tta = await read_form(request, max_bytes, admission)
        except TimeoutError:
            return JSONResponse(
                {"error": f"The upload did not arrive within {upload_timeout_s:g} s: try again."},
                status_code=408,
                headers={"Connection": "close"},
            )  # the rest of its body is never read: the connection is dropped now
        except UploadError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        if admission.admitted >= admission.limit:
            return JSONResponse({"error": "The page is busy with other paintings: try again in a moment."}, status_code=503)
        admission.admitted += 1
        try:
            answer = partial(predict_upload, predictor, data, tta, top_k, max_bytes, max_pixels)
            return await anyio.to_thread.run_sync(answer, limiter=limiter)
        except UploadError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        finally:
            admission.admitted -= 1

    return app


BUSY = UploadError("The page is receiving too many paintings at once: try again in a moment.", 503)


async def read_form(request: Request, max_bytes: int, admission: Admission) -> tuple[bytes, str]:
    """(file bytes, tta) of the upload, its body read in memory up to ``max_bytes`` + the form's overhead, its
    bytes counted in ``admission.buffered`` while they arrive."""
    limit = max_bytes + FORM_OVERHEAD
    too_large = UploadError(f"The file is over the {max_bytes / 1e6:.0f} MB limit.", 413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    try:
        async for chunk in request.stream():
            if admission.buffered + len(chunk) > admission.max_buffered:
                raise BUSY
            body += chunk
            admission.buffered += len(chunk)
            if len(body) > limit:
                raise too_large
    finally:
        admission.buffered -= len(body)
    parser = MultiPartParser(request.headers, _once(bytes(body)), max_files=1, max_fields=4, max_part_size=limit)
    parser.spool_max_size = limit + 1  # the file part stays in memory (the body is already within the limit)
    try:
        form = await parser.parse()
    except MultiPartException as error:
        raise UploadError(f"The upload is not a form with one painting ({error.message}).") from None
    upload, tta = form.get("file"), form.get("tta", "none")
    if upload is None or isinstance(upload, str):
        raise UploadError("The upload has no file: choose a painting (JPEG, PNG, WebP…).")
    if tta not in ("none", "flip"):
        raise UploadError(f"tta={tta!r}: the page offers none or flip.")
    return await upload.read(), tta


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


def render_page(headline: Mapping[str, str], max_bytes: int, max_pixels: int) -> str:
    """``page/index.html`` with the headline facts, escaped: text, never HTML."""
    facts = "".join(f"<div><span>{html.escape(str(k))}</span><b>{html.escape(str(v))}</b></div>" for k, v in headline.items())
    limits = f"up to {max_bytes / 1e6:.0f} MB and {max_pixels / 1e6:.0f} megapixels"
    page = files("artmove.serving").joinpath("page", "index.html").read_text(encoding="utf-8")
    return page.replace("{facts}", facts).replace("{limits}", limits).replace("{title}", html.escape(str(headline.get("Model", "artmove"))))


def headline_numbers(facts: RunFacts) -> dict[str, str]:
    """The model card's headline: model, data, test top-1/top-5/macro and where they come from."""
    metrics, source = facts.test_metrics
    from artmove.release.card import data_name

    numbers = {"Model": facts.backbone, "Movements": f"{len(facts.class_names)} ({data_name(facts)})"}
    if "test/top1" in metrics:
        numbers.update(
            {
                "Test top-1": f"{metrics['test/top1']:.1%}",
                "Test top-5": f"{metrics['test/top5']:.1%}",
                "Top-1 macro": f"{metrics['test/top1_macro']:.1%}",
                "Test images": str(metrics.get("test/num_images", "?")),
                "Scores from": source.replace("`", ""),
            }
        )
    else:
        numbers["Test scores"] = "not tested"
    return numbers
