// The demo page's one script, served from its own path (the page's Content-Security-Policy allows no other).
// Everything the server answers (class names come from a model file) goes into the page as text, never as HTML.
const input = document.getElementById("image"), tta = document.getElementById("tta");
const label = document.getElementById("label"), message = document.getElementById("message");
const unsure = document.getElementById("unsure"), gradcam = document.getElementById("gradcam"), gradcamFigure = document.getElementById("gradcam-figure");
const drop = document.getElementById("drop"), topk = document.getElementById("topk");
const pretty = s => String(s).replaceAll("_", " ");
const percent = p => `${(100 * Number(p)).toFixed(1)}%`;
let painting = null;  // the file chosen or dropped last: what the tta box re-sends

function element(tag, text) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  return node;
}

function bar(answer) {
  const row = element("div"), track = element("b"), fill = element("i");
  row.className = "bar";
  fill.style.width = percent(answer.prob);
  track.append(fill);
  row.append(element("span", pretty(answer.label)), track, element("span", percent(answer.prob)));
  return row;
}

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
    topk.replaceChildren(...data.top.map(bar));
    label.textContent = pretty(data.top[0].label); label.dataset.label = data.top[0].label;
    label.dataset.uncertain = data.uncertain === true ? "true" : "false";
    unsure.textContent = data.uncertain ? `not sure: ${percent(data.top[0].prob)} is below this model's threshold of ${percent(data.threshold)}; check it by hand` : "";
    showSet(data.set, data.coverage, data.movements);
    if (data.gradcam && String(data.gradcam).startsWith("data:image/png;base64,")) { gradcam.src = data.gradcam; } else { gradcam.removeAttribute("src"); }
    gradcamFigure.hidden = !gradcam.hasAttribute("src");
    label.dataset.state = "done";
  } catch (error) {
    message.textContent = error.message; label.textContent = "none"; label.dataset.state = "error"; unsure.textContent = "";
    topk.replaceChildren(); gradcam.removeAttribute("src"); showSet(null, null, 0);
  }
}

// The prediction set: the movements that hold the true one for `coverage` of paintings like the validation split.
function showSet(movements, coverage, count) {
  const line = document.getElementById("set-line"), set = document.getElementById("set");
  line.hidden = !Array.isArray(movements);
  if (line.hidden) return;
  const level = `${(100 * Number(coverage)).toFixed(0)} % sets`;
  set.textContent = movements.length === 0 ? "No movement is likely enough"
    : movements.length === count ? `Any of the ${count} movements: the model cannot narrow this painting down`
    : movements.map(pretty).join(" or ");
  set.dataset.movements = JSON.stringify(movements);
  document.getElementById("set-level").textContent = `— ${level}`;
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
