"""The demo page: upload a painting, see the top-5 movements, the Grad-CAM overlay and the model's test scores.

One page and one endpoint (``POST predict``); the page's script draws the answer. Uploads are
checked before any pixel is decoded: size in bytes while the body streams, then image dimensions
from the header; predictions run off the event loop, a bounded number at once.
Needs the ``demo`` extra (fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping
from functools import partial

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.formparsers import MultiPartException, MultiPartParser

from artmove.data.images import UnreadableImageError, load_rgb
from artmove.data.transforms import decode_size
from artmove.evaluation.tta import check_tta
from artmove.serving.predictor import Predictor


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
        return load_rgb(io.BytesIO(data), min_size)
    except UnreadableImageError as error:
        raise UploadError(f"The image could not be decoded ({error.__cause__}): it may be truncated or damaged.") from None


def predict_upload(predictor: Predictor, data: bytes, tta: str = "none", top_k: int = 5,
                   max_bytes: int = 20_000_000, max_pixels: int = 50_000_000) -> dict:  # fmt: skip
    """What the page shows for one upload: ``{"top": [{"label", "prob"}], "gradcam": data URL or None (an
    ensemble has no one network to explain), "uncertain": bool or None, "threshold"}``."""
    check_tta(tta)
    image = read_upload(data, max_bytes, max_pixels, decode_size(predictor.preprocessing))
    prediction = predictor(image, top_k=top_k, tta=tta, gradcam=predictor.explains)
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
        "tta": tta,
    }


#: What a request may hold besides the file: multipart boundaries, part headers, the tta field.
FORM_OVERHEAD = 64 * 1024


def create_app(predictor: Predictor, headline: Mapping[str, str], top_k: int = 5, max_bytes: int = 20_000_000,
               max_pixels: int = 50_000_000, max_parallel: int = 1, max_waiting: int = 16):  # fmt: skip
    """The FastAPI app: ``GET /`` the page, ``POST /predict`` (multipart ``file``, form ``tta``) the answer.

    The body is counted while it streams, chunked or not: past the limit the request ends with 413 and
    no more of it is read; it is kept in memory, never written to disk. Predictions run in worker
    threads, ``max_parallel`` at once (torch releases the GIL), so the page and other requests keep
    answering while paintings are classified; past ``max_waiting`` requests in line, 503."""
    app = FastAPI(title="artmove demo", docs_url=None, redoc_url=None, openapi_url=None)
    page = render_page(headline, max_bytes, max_pixels)
    limiter = anyio.CapacityLimiter(max_parallel)
    waiting = [0]

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return page

    @app.post("/predict")
    async def predict(request: Request):
        if waiting[0] >= max_waiting:
            return JSONResponse({"error": "The page is busy with other paintings: try again in a moment."}, status_code=503)
        waiting[0] += 1
        try:
            data, tta = await read_form(request, max_bytes)
            answer = partial(predict_upload, predictor, data, tta, top_k, max_bytes, max_pixels)
            return await anyio.to_thread.run_sync(answer, limiter=limiter)
        except UploadError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        finally:
            waiting[0] -= 1

    return app


async def read_form(request: Request, max_bytes: int) -> tuple[bytes, str]:
    """(file bytes, tta) of the upload, its body read in memory up to ``max_bytes`` + the form's overhead."""
    limit = max_bytes + FORM_OVERHEAD
    too_large = UploadError(f"The file is over the {max_bytes / 1e6:.0f} MB limit.", 413)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
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


async def _once(body: bytes):
    yield body


def render_page(headline: Mapping[str, str], max_bytes: int, max_pixels: int) -> str:
    facts = "".join(f"<div><span>{html.escape(k)}</span><b>{html.escape(str(v))}</b></div>" for k, v in headline.items())
    limits = f"up to {max_bytes / 1e6:.0f} MB and {max_pixels / 1e6:.0f} megapixels"
    return PAGE.replace("{facts}", facts).replace("{limits}", limits).replace("{title}", html.escape(headline.get("Model", "artmove")))


def headline_numbers(facts) -> dict[str, str]:
    """The model card's headline: model, data, test top-1/top-5/macro and where they come from."""
    metrics, source = facts.test_metrics
    from artmove.release.card import data_name

    numbers = {"Model": facts.backbone, "Movements": f"{len(facts.class_names)} ({data_name(facts)})"}
    if "test/top1" in metrics:
        numbers.update({"Test top-1": f"{metrics['test/top1']:.1%}", "Test top-5": f"{metrics['test/top5']:.1%}",
                        "Top-1 macro": f"{metrics['test/top1_macro']:.1%}",
                        "Test images": str(metrics.get("test/num_images", "?")), "Scores from": source.replace("`", "")})  # fmt: skip
    else:
        numbers["Test scores"] = "not tested"
    return numbers


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}: art movement demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:1.5rem auto;max-width:60rem;padding:0 1rem;color:#222}
 h1{font-size:1.4rem;margin:0 0 .8rem}
 #facts{display:flex;flex-wrap:wrap;gap:.5rem;margin-bottom:1rem}
 #facts div{background:#f3f4f6;border-radius:6px;padding:.35rem .6rem;font-size:.85rem}
 #facts span{color:#555;margin-right:.4rem}
 form{display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap;margin-bottom:1rem}
 #drop{display:flex;gap:.8rem;align-items:center;flex-wrap:wrap;border:2px dashed #9ca3af;border-radius:8px;padding:.9rem 1rem}
 #drop.dragging{border-color:#4f7cc1;background:#eef3fb}
 #result{display:grid;grid-template-columns:1fr 1fr;gap:1.5rem}
 .bar{display:grid;grid-template-columns:13rem 1fr 4rem;align-items:center;gap:.5rem;margin:.3rem 0;font-size:.9rem}
 .bar b{display:block;height:1rem;background:#e5e7eb;border-radius:3px}
 .bar i{display:block;height:100%;background:#4f7cc1;border-radius:3px}
 #message{color:#b00020;font-weight:600;min-height:1.2rem}
 #unsure{color:#8a5a00;font-size:.9rem}
 img{max-width:100%;border-radius:6px}
 figure{margin:0} figcaption{font-size:.8rem;color:#555}
</style></head>
<body>
<h1>Which art movement? <small>({title})</small></h1>
<div id="facts">{facts}</div>
<form id="form">
 <div id="drop"><b>Drop a painting here</b> or <input type="file" id="image" name="file" accept="image/*"></div>
 <label><input type="checkbox" id="tta"> test-time augmentation (image + mirror)</label>
 <small>JPEG, PNG, WebP…, {limits}</small>
</form>
<p id="message" role="alert"></p>
<p>Prediction: <strong id="label" data-state="idle">none yet</strong> <em id="unsure"></em></p>
<div id="result">
 <div><h2>Top 5</h2><div id="topk"></div></div>
 <figure id="gradcam-figure"><h2>Grad-CAM</h2><img id="gradcam" alt=""><figcaption>Regions that raised the top movement's score (red: most).</figcaption></figure>
</div>
<script>
const input = document.getElementById("image"), tta = document.getElementById("tta");
const label = document.getElementById("label"), message = document.getElementById("message");
const unsure = document.getElementById("unsure"), gradcam = document.getElementById("gradcam"), gradcamFigure = document.getElementById("gradcam-figure");
const drop = document.getElementById("drop");
const pretty = s => s.replaceAll("_", " ");
let painting = null;  // the file chosen or dropped last: what the tta box re-sends
async function send() {
  if (!painting) return;
  const body = new FormData();
  body.append("file", painting);
  body.append("tta", tta.checked ? "flip" : "none");
  label.dataset.state = "busy"; label.textContent = "…"; message.textContent = "";
  try {
    const answer = await fetch("predict", {method: "POST", body});
    const data = await answer.json();
    if (!answer.ok) throw new Error(data.error || data.detail || answer.statusText);
    document.getElementById("topk").innerHTML = data.top.map(t =>
      `<div class="bar"><span>${pretty(t.label)}</span><b><i style="width:${(100 * t.prob).toFixed(1)}%"></i></b><span>${(100 * t.prob).toFixed(1)}%</span></div>`).join("");
    label.textContent = pretty(data.top[0].label); label.dataset.label = data.top[0].label;
    label.dataset.uncertain = data.uncertain === true ? "true" : "false";
    unsure.textContent = data.uncertain ? `not sure: ${(100 * data.top[0].prob).toFixed(1)}% is below this model's threshold of ${(100 * data.threshold).toFixed(1)}%; check it by hand` : "";
    if (data.gradcam) { gradcam.src = data.gradcam; } else { gradcam.removeAttribute("src"); }
    gradcamFigure.hidden = !data.gradcam;
    label.dataset.state = "done";
  } catch (error) {
    message.textContent = error.message; label.textContent = "none"; label.dataset.state = "error"; unsure.textContent = "";
    document.getElementById("topk").innerHTML = ""; gradcam.removeAttribute("src");
  }
}
input.addEventListener("change", () => { painting = input.files[0] || null; send(); });
tta.addEventListener("change", send);
// A painting dropped anywhere on the page takes the file button's way; the box shows where it lands.
const dragged = e => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
document.addEventListener("dragover", e => { if (dragged(e)) { e.preventDefault(); drop.classList.add("dragging"); } });
document.addEventListener("dragleave", e => { if (!e.relatedTarget) drop.classList.remove("dragging"); });
document.addEventListener("drop", e => {
  if (!dragged(e)) return;
  e.preventDefault(); drop.classList.remove("dragging");
  if (e.dataTransfer.files.length) { painting = e.dataTransfer.files[0]; input.value = ""; send(); }
});
</script>
</body></html>
"""
