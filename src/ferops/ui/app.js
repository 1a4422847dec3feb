// ferops web page: send an image to POST /explain (the same endpoint any client uses) and show
// every face boxed on the image, its expression, the 7 probabilities and the explanation.
// Plain browser JavaScript: no framework, no build step, nothing loaded from elsewhere.
"use strict";

// The page lives at <service>/ui/; the API routes are beside /ui.
const EXPLAIN_URL = new URL("../explain", document.baseURI);

const $ = (id) => document.getElementById(id);
const app = $("app");

/** Element `tag` with class `className` and text `text` (never HTML: answers are data). */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const percent = (p) => `${(100 * p).toFixed(1)} %`;

/** `feature12 <= 0.3` as a person reads it. */
function condition(c) {
  const op = c.op === "<=" ? "≤" : ">";
  return `${c.feature} ${op} ${Number(c.threshold).toFixed(3)}`;
}

function setState(state) {
  app.dataset.state = state;
}

/** Show `text` above the result; kind "error" (red) or "info". */
function showMessage(text, kind) {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
  message.hidden = false;
}

function hideMessage() {
  $("message").hidden = true;
}

function clearResult() {
  $("boxes").replaceChildren();
  $("faces").replaceChildren();
  $("caption").textContent = "";
}

/** An error answer of the API, {"error", "detail"}, or any other failure: shown, never blank. */
function fail(text) {
  clearResult();
  $("figure").hidden = true;
  setState("error");
  showMessage(text, "error");
}

/** Display the uploaded image; resolves to true once the browser has decoded it. */
async function showImage(blob) {
  const image = $("image");
  if (image.src) URL.revokeObjectURL(image.src);
  image.src = URL.createObjectURL(blob);
  image.hidden = false;
  $("video").hidden = true;
  $("figure").hidden = false;
  try {
    await image.decode();
    return true;
  } catch {
    return false;
  }
}

/** Upload `blob` to /explain and show the answer. */
async function analyse(blob, name) {
  clearResult();
  hideMessage();
  setState("busy");
  showMessage(`Analysing ${name} …`, "info");
  const shown = await showImage(blob);
  const form = new FormData();
  form.append("image", blob, name);
  if ($("crop").checked) form.append("crop", "true");
  let response;
  try {
    response = await fetch(EXPLAIN_URL, { method: "POST", body: form });
  } catch (error) {
    return fail(`The service could not be reached: ${error.message}`);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    return fail(`The service answered HTTP ${response.status} ${response.statusText} without JSON.`);
  }
  if (!response.ok) {
    const code = body.error ?? `HTTP ${response.status}`;
    const detail = body.detail ?? JSON.stringify(body);
    return fail(`${name} was refused (${response.status} ${code}): ${detail}`);
  }
  render(body, name, shown);
}

const REASONS = {
  no_face: "No face was found in this image.",
  image_too_small: "The image is too small to look for a face (under 16 pixels on a side).",
};

/** Draw the boxes and the face cards of an /explain answer. */
function render(body, name, shown) {
  $("model").textContent = `model ${body.model}`;
  hideMessage();
  if (!body.faces.length) {
    setState("empty");
    showMessage(REASONS[body.reason] ?? `No face (${body.reason}).`, "info");
    return;
  }
  if (!shown) {
    showMessage("Your browser cannot display this image; the faces are listed below.", "info");
  }
  // The principal face first, then in the order the service found them.
  const faces = body.faces.map((face, i) => ({ ...face, number: i + 1 }));
  faces.sort((a, b) => Number(b.principal) - Number(a.principal));
  const image = $("image");
  for (const face of faces) {
    if (face.explanation?.occlusion && shown) {
      $("boxes").append(occlusionFrame(face, image.naturalWidth, image.naturalHeight));
    }
    if (face.box && shown) $("boxes").append(box(face, image.naturalWidth, image.naturalHeight));
    $("faces").append(card(face));
  }
  const count = faces.length === 1 ? "1 face" : `${faces.length} faces`;
  $("caption").textContent = `${name}: ${count}` +
    (shown ? ` · ${image.naturalWidth} × ${image.naturalHeight} px` : "");
  setState("done");
}

/** A box over the image, placed in percent of the image so it follows any display size. */
function box(face, width, height) {
  const [left, top, right, bottom] = face.box;
  const node = el("div", face.principal ? "face-box principal" : "face-box");
  node.dataset.number = face.number;
  node.style.left = `${(100 * left) / width}%`;
  node.style.top = `${(100 * top) / height}%`;
  node.style.width = `${(100 * (right - left)) / width}%`;
  node.style.height = `${(100 * (bottom - top)) / height}%`;
  const tag = el("span", "tag");
  tag.append(el("b", "", `${face.number}`), ` ${face.expression}`);
  node.append(tag);
  return node;
}

/** The occlusion map over the whole image, its canvas mapped onto the square the network saw:
 * the answer's `corners` (top-left, top-right, bottom-right, bottom-left in image pixels; tilted
 * with the head, since faces are aligned), or the face box for a bundle that does not align
 * (its faces are square crops of the box). The canvas fills the frame (the displayed image,
 * W × H); a CSS transform takes its corners (0, 0), (W, 0), (0, H) onto the square's.
 * Translations in percent are of the canvas's own size, and W / H is the image's aspect, so the
 * placement follows any display size. */
function occlusionFrame(face, width, height) {
  const occlusion = face.explanation.occlusion;
  const [left, top, right, bottom] = face.box ?? [];
  const box = [[left, top], [right, top], [right, bottom], [left, bottom]];
  const [[x0, y0], [x1, y1], , [x3, y3]] = occlusion.corners ?? box;
  const canvas = occlusionCanvas(occlusion);
  canvas.style.transform = `translate(${(100 * x0) / width}%, ${(100 * y0) / height}%) ` +
    `matrix(${(x1 - x0) / width}, ${(y1 - y0) / width}, ${(x3 - x0) / height}, ` +
    `${(y3 - y0) / height}, 0, 0)`;
  const node = el("div", "occlusion-frame");
  node.dataset.number = face.number;
  node.append(canvas);
  return node;
}

/** Most opaque a cell of the occlusion map is drawn (the cell that mattered most, when hiding
 * it lowered the answer's probability by OCCLUSION_FULL_DROP or more). */
const OCCLUSION_ALPHA = 170;
const OCCLUSION_FULL_DROP = 0.1;
/** A map whose largest drop is tiny is still drawn, faintly: at least this share of the alpha. */
const OCCLUSION_MIN_STRENGTH = 0.25;

/** Where the network looked: the occlusion map (grid × grid cells in [0, 1], rows from the
 * top) as a grid × grid canvas (placed by occlusionFrame), one red square per cell, more opaque
 * where hiding that cell lowered the predicted class's probability more; the whole map fainter
 * when even the largest drop was small. */
function occlusionCanvas(occlusion) {
  const grid = occlusion.grid;
  const canvas = el("canvas", "occlusion");
  canvas.width = canvas.height = grid;
  canvas.dataset.grid = grid;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(grid, grid);
  // cells are relative to the largest drop: a map where nothing mattered much is drawn faint
  const strength = Math.max(OCCLUSION_MIN_STRENGTH,
                            Math.min(1, occlusion.max_drop / OCCLUSION_FULL_DROP));
  occlusion.cells.flat().forEach((value, i) => {
    pixels.data.set([230, 20, 20, Math.round(OCCLUSION_ALPHA * strength * value)], 4 * i);
  });
  context.putImageData(pixels, 0, 0);
  return canvas;
}

/** A face: expression, the 7 probabilities as bars, and the explanation in words. */
function card(face) {
  const node = el("article", face.principal ? "face-card principal" : "face-card");
  node.dataset.number = face.number;
  const head = el("h2");
  head.append(el("span", "number", `${face.number}`), el("span", "expression", face.expression));
  head.append(el("span", "probability", percent(face.probabilities[face.expression])));
  if (face.principal) head.append(el("span", "badge", "principal face"));
  node.append(head);
  if (!face.box) node.append(el("p", "muted", "The whole image, taken as a face crop."));

  const bars = el("div", "bars");
  for (const [label, p] of Object.entries(face.probabilities)) {
    const row = el("div", label === face.expression ? "bar top" : "bar");
    row.dataset.label = label;
    const track = el("span", "track");
    const fill = el("span", "fill");
    fill.style.width = `${100 * p}%`;
    track.append(fill);
    row.append(el("span", "label", label), track, el("span", "value", percent(p)));
    bars.append(row);
  }
  node.append(bars);
  if (face.explanation) node.append(explanation(face.explanation));
  return node;
}

/** The four-part explanation of ferops.explanation.Explainer, in sentences. */
function explanation(x) {
  const list = el("ul", "explanation");
  const item = (title, text) => {
    const li = el("li");
    li.append(el("b", "", `${title}: `), text);
    list.append(li);
    return li;
  };
  const fired = x.rules_fired;
  item("Rule that fired",
    `for ${fired.class}, ${fired.rule}. ${percent(fired.leaf_precision)} of the training faces ` +
    `on this rule were ${fired.class} for the network` +
    (fired.tree_agrees ? ", so the rules agree with it." :
      `; here the rules disagree with the network (they would not say ${fired.class}).`));

  const nearest = x.nearest_pattern;
  item("Nearest pattern",
    `${nearest.class} (cosine similarity ${nearest.similarity.toFixed(3)}` +
    (nearest.class === x.predicted ? ")." :
      `; ${x.predicted}'s pattern: ${nearest.similarity_to_predicted.toFixed(3)}).`));

  if (x.important_inputs.length) {
    item("Inputs that decided", x.important_inputs.map((c) =>
      `${c.feature} = ${c.value.toFixed(3)} (${condition(c)}; ${x.predicted} pattern ` +
      `${c.pattern_value.toFixed(3)})`).join(", ") + ".");
  }

  const next = x.next_most_likely;
  let needed;
  if (!next.rule_needed) {
    needed = `no rule of the ${next.class} tree says ${next.class}.`;
  } else if (!next.conditions_missed.length) {
    needed = `its rule ${next.rule_needed} already holds.`;
  } else {
    const missed = next.conditions_missed.map((c) => `${condition(c)} (is ${c.value.toFixed(3)})`);
    needed = `it would have needed ${missed.join(" and ")}.`;
  }
  item("Next most likely", `${next.class} (${percent(next.probability)}): ${needed}`);

  const occlusion = x.occlusion;
  if (occlusion) {
    const drop = (100 * occlusion.max_drop).toFixed(1);
    item("Where it looked", occlusion.max_drop < 0.01 ?
      `hiding any one of the ${occlusion.grid} × ${occlusion.grid} squares of the face changes ` +
      `${x.predicted}'s probability by less than 1 point.` :
      `the red squares on the face: hiding the reddest lowers ${x.predicted}'s probability ` +
      `by ${drop} points (${occlusion.grid} × ${occlusion.grid} squares, each hidden in turn).`);
  }
  return list;
}

// ---- input: file picker, drag and drop, webcam -------------------------------------------

$("file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) analyse(file, file.name);
  event.target.value = ""; // picking the same file again analyses it again
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  const [file] = event.dataTransfer.files;
  if (file) analyse(file, file.name);
});

let stream = null;

function stopWebcam() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("snap").hidden = true;
  $("video").hidden = true;
}

$("webcam").addEventListener("click", async () => {
  if (!navigator.mediaDevices?.getUserMedia) {
    return fail("This browser offers no webcam here (it needs https or localhost).");
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: true });
  } catch (error) {
    return fail(`The webcam could not be opened: ${error.message}`);
  }
  clearResult();
  hideMessage();
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  $("image").hidden = true;
  $("figure").hidden = false;
  $("snap").hidden = false;
});

$("snap").addEventListener("click", () => {
  const video = $("video");
  const canvas = el("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  stopWebcam();
  canvas.toBlob((blob) => analyse(blob, "webcam.jpg"), "image/jpeg", 0.92);
});
