"use strict";
// Draw a digit; ~150 ms after the ink stops, the canvas goes to POST /predict as a PNG, and the
// newest answer is shown: the digit, its confidence, the ten probabilities and what the network saw.
// When the server stores feedback (GET /health says so), "Right" or "Wrong, it is: d" sends the
// same image with its right digit to POST /feedback.
// In number mode the canvas is wide and goes to POST /read: the number is shown, with a box over each digit.

const STROKE_WIDTH = 280 / 12;
const DEBOUNCE_MS = 150;
const MAX_STROKES_CHARS = 64 * 1024;  // the server's limit for the strokes sent with feedback
const INK = "#111";

const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");
const pad = document.querySelector(".pad");
const result = document.querySelector(".result");
const prediction = document.getElementById("prediction");
const confidence = document.getElementById("confidence");
const bars = document.getElementById("probabilities");
const preview = document.getElementById("preview");
const errorBox = document.getElementById("error");
const upload = document.getElementById("upload");
const feedbackBox = document.getElementById("feedback");
const confirmButton = document.getElementById("confirm");
const correctDigits = document.getElementById("correct");
const feedbackStatus = document.getElementById("feedback-status");
const title = document.querySelector("h1");
const hint = document.getElementById("hint");
const numberOut = document.getElementById("number");
const boxes = document.getElementById("boxes");
const seenDigits = document.getElementById("seen-digits");
const modeButtons = { digit: document.getElementById("mode-digit"), number: document.getElementById("mode-number") };
const MODES = {
  digit: { width: 280, height: 280, endpoint: "/predict", title: "Draw a digit", start: "Draw a digit to start.",
           hint: "Draw one digit, 0 to 9, with a mouse, a pen or a finger; or drop an image here.",
           label: "Drawing area: draw a digit here" },
  number: { width: 840, height: 280, endpoint: "/read", title: "Write a number", start: "Write a number to start.",
            hint: "Write a number, several digits in a row, with a mouse, a pen or a finger; or drop an image here.",
            label: "Drawing area: write a number here" },
};

let strokes = [];        // each stroke is a list of [x, y] points in canvas pixels
let current = null;      // the stroke under the pointer
let background = null;   // an uploaded image, drawn under the strokes
let timer = 0;
let latest = 0;          // number of the newest request: older answers are dropped
let inflight = null;     // AbortController of the request under way
let changes = 0;         // number of the newest change of the ink
let scheduled = 0;       // the change whose request is not sent yet (0: none)
let feedbackOn = false;  // the server stores feedback
let asked = null;        // the image the shown answer is about: { blob, name, strokes, digit, isDigit }
let mode = "digit";
let placement = null;    // where the uploaded image is drawn: canvas x = left + scale * image x (same for y)
let fromUpload = false;  // the server reads the uploaded file itself, not the canvas

// --- drawing -------------------------------------------------------------------------------

function canvasPoint(event) {
  // Through the canvas's on-screen size, so CSS scaling and the border do not skew strokes.
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left - canvas.clientLeft) * (canvas.width / canvas.clientWidth);
  const y = (event.clientY - box.top - canvas.clientTop) * (canvas.height / canvas.clientHeight);
  return [x, y];
}

function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  if (background) {
    const scale = Math.min(canvas.width / background.width, canvas.height / background.height);
    const w = background.width * scale;
    const h = background.height * scale;
    placement = { scale, left: (canvas.width - w) / 2, top: (canvas.height - h) / 2 };
    ctx.drawImage(background, placement.left, placement.top, w, h);
  }
  ctx.strokeStyle = INK;
  ctx.fillStyle = INK;
  ctx.lineWidth = STROKE_WIDTH;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  for (const stroke of strokes) {
    ctx.beginPath();
    if (stroke.length === 1) {  // a tap: a dot
      ctx.arc(stroke[0][0], stroke[0][1], STROKE_WIDTH / 2, 0, 2 * Math.PI);
      ctx.fill();
      continue;
    }
    ctx.moveTo(...stroke[0]);
    for (const point of stroke.slice(1)) ctx.lineTo(...point);
    ctx.stroke();
  }
}

canvas.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  fromUpload = false;  // the canvas is sent from now on, with the upload drawn in it
  canvas.setPointerCapture(event.pointerId);
  current = [canvasPoint(event)];
  strokes.push(current);
  redraw();
});

canvas.addEventListener("pointermove", (event) => {
  if (!current) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) current.push(canvasPoint(e));
  redraw();
  schedulePrediction();
});

function endStroke() {
  if (!current) return;
  current = null;
  schedulePrediction();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

document.getElementById("undo").addEventListener("click", () => {
  if (strokes.length) strokes.pop();
  else background = null;
  redraw();
  schedulePrediction();
});

document.getElementById("clear").addEventListener("click", () => {
  strokes = [];
  background = null;
  redraw();
  schedulePrediction();
});

// --- uploads: file picker and drag-and-drop ------------------------------------------------

function useFile(file) {
  if (!file) return;
  strokes = [];
  background = null;
  placement = null;
  fromUpload = true;
  createImageBitmap(file)
    .then((bitmap) => { background = bitmap; redraw(); })
    .catch(() => redraw());  // the browser cannot show it; the server still says what it makes of it
  clearTimeout(timer);
  scheduled = 0;
  send(file, file.name);
}

upload.addEventListener("change", () => {
  useFile(upload.files[0]);
  upload.value = "";  // choosing the same file again is a new upload
});

pad.addEventListener("dragover", (event) => {
  event.preventDefault();
  pad.classList.add("dragging");
});
pad.addEventListener("dragleave", () => pad.classList.remove("dragging"));
pad.addEventListener("drop", (event) => {
  event.preventDefault();
  pad.classList.remove("dragging");
  useFile(event.dataTransfer.files[0]);
});

// --- asking the server -----------------------------------------------------------------------

function isEmpty() {
  return strokes.length === 0 && background === null;
}

function schedulePrediction() {
  clearTimeout(timer);
  scheduled = 0;
  if (isEmpty()) {
    latest += 1;  // an answer still on its way is for ink that is gone
    if (inflight) inflight.abort();
    showNothing();
    return;
  }
  // Busy from the first change: the answer shown is for older ink until the new one arrives.
  const change = ++changes;
  scheduled = change;
  result.setAttribute("aria-busy", "true");
  timer = setTimeout(() => {
    const drawn = JSON.stringify(strokes.map((stroke) => stroke.map(([x, y]) => [Math.round(x), Math.round(y)])));
    canvas.toBlob((blob) => {
      if (scheduled !== change) return;  // the ink changed again meanwhile
      scheduled = 0;
      send(blob, "drawing.png", drawn);
    }, "image/png");
  }, DEBOUNCE_MS);
}

async function send(blob, name, drawn = null) {
  const id = ++latest;
  if (inflight) inflight.abort();
  inflight = new AbortController();
  result.classList.add("loading");
  result.setAttribute("aria-busy", "true");
  const form = new FormData();
  form.append("file", blob, name);
  try {
    const response = await fetch(MODES[mode].endpoint, { method: "POST", body: form, signal: inflight.signal });
    const body = await response.json().catch(() => ({}));
    if (id !== latest) return;
    if (response.ok && mode === "number") {
      showReading(body);
    } else if (response.ok) {
      showAnswer(body);
      askFeedback({ blob, name, strokes: drawn, digit: body.digit, isDigit: body.is_digit });
    } else {
      showError(body.error || `The server answered ${response.status} ${response.statusText}.`);
    }
  } catch (error) {
    if (error.name !== "AbortError" && id === latest) showError(`Cannot reach the server (${error.message}).`);
  } finally {
    if (id === latest) {
      result.classList.remove("loading");
      if (!scheduled) result.removeAttribute("aria-busy");
    }
  }
}

// --- showing the answer ----------------------------------------------------------------------

function buildBars() {
  for (let digit = 0; digit < 10; digit++) {
    const item = document.createElement("li");
    item.dataset.digit = String(digit);
    item.innerHTML = `<span>${digit}</span><span class="track"><span class="fill"></span></span>` +
                     `<span class="value">–</span>`;
    bars.append(item);
  }
}

function showBars(probabilities, winner) {
  for (const item of bars.children) {
    const digit = Number(item.dataset.digit);
    const p = probabilities ? probabilities[digit] : 0;
    item.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    item.querySelector(".value").textContent = probabilities ? `${(100 * p).toFixed(1)} %` : "–";
    item.classList.toggle("winner", digit === winner);
    item.setAttribute("aria-label", `digit ${digit}: ${probabilities ? (100 * p).toFixed(1) + " percent" : "no answer"}`);
  }
}

function showAnswer(answer) {
  errorBox.hidden = true;
  result.classList.toggle("not-digit", !answer.is_digit);
  prediction.textContent = answer.is_digit ? String(answer.digit) : "?";
  if (answer.is_digit) {
    confidence.textContent = `${(100 * answer.confidence).toFixed(1)} % confident`;
  } else {
    const guess = answer.digit === null ? "" : ` (best guess ${answer.digit})`;
    confidence.textContent = `Not a digit: ${answer.reason}${guess}`;
  }
  showBars(answer.probabilities, answer.is_digit ? answer.digit : null);
  if (answer.seen) preview.src = answer.seen;
  else preview.removeAttribute("src");
}

function showReading(reading) {
  errorBox.hidden = true;
  result.classList.toggle("not-digit", !reading.is_number);
  numberOut.textContent = reading.text || "?";
  if (reading.is_number) {
    confidence.textContent = `${(100 * reading.confidence).toFixed(1)} % confident`;
  } else {
    const guess = reading.text ? ` (best guess ${reading.text})` : "";
    confidence.textContent = `Not a number: ${reading.reason}${guess}`;
  }
  showBoxes(reading.digits, reading.is_number);
  seenDigits.replaceChildren(...reading.digits.map((digit, i) => {
    const image = document.createElement("img");
    image.src = digit.seen;
    image.alt = `What the network saw of digit ${i + 1}, read as ${digit.digit}`;
    return image;
  }));
}

function showBoxes(digits, allClear) {
  // Boxes come in the pixels of the image the server read: the canvas, or an uploaded image drawn in it.
  const frame = fromUpload ? placement : { scale: 1, left: 0, top: 0 };
  boxes.replaceChildren();
  if (!frame) return;  // an upload the browser cannot show
  for (const digit of digits) {
    const [x0, y0, x1, y1] = digit.box.map((v, i) => (i % 2 ? frame.top : frame.left) + frame.scale * v);
    const box = document.createElement("div");
    box.className = "digit-box";
    box.classList.toggle("unclear", !allClear && digit.confidence < 0.5);
    box.dataset.testid = "digit-box";
    box.dataset.digit = String(digit.digit);
    Object.assign(box.style, { left: `${(100 * x0) / canvas.width}%`, top: `${(100 * y0) / canvas.height}%`,
                               width: `${(100 * (x1 - x0)) / canvas.width}%`,
                               height: `${(100 * (y1 - y0)) / canvas.height}%` });
    const label = document.createElement("span");
    label.textContent = `${digit.digit} · ${(100 * digit.confidence).toFixed(0)} %`;
    box.setAttribute("aria-label", `digit ${digit.digit}, ${(100 * digit.confidence).toFixed(1)} percent confident`);
    box.append(label);
    boxes.append(box);
  }
}

function showNothing() {
  askFeedback(null);
  errorBox.hidden = true;
  result.classList.remove("not-digit", "loading");
  result.removeAttribute("aria-busy");
  prediction.textContent = "?";
  numberOut.textContent = "?";
  confidence.textContent = MODES[mode].start;
  showBars(null, null);
  preview.removeAttribute("src");
  boxes.replaceChildren();
  seenDigits.replaceChildren();
}

function showError(message) {
  askFeedback(null);
  prediction.textContent = "?";
  numberOut.textContent = "?";
  confidence.textContent = "";
  showBars(null, null);
  preview.removeAttribute("src");
  boxes.replaceChildren();
  seenDigits.replaceChildren();
  errorBox.textContent = message;
  errorBox.hidden = false;
}

// --- feedback: the right digit for the answer shown -------------------------------------------

function buildFeedback() {
  for (let digit = 0; digit < 10; digit++) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.digit = String(digit);
    button.textContent = String(digit);
    button.setAttribute("aria-label", `Wrong, it is ${digit}`);
    button.addEventListener("click", () => giveFeedback(digit, button));
    correctDigits.append(button);
  }
  confirmButton.addEventListener("click", () => giveFeedback(asked.digit, confirmButton));
  fetch("/health")
    .then((response) => response.json())
    .then((health) => { feedbackOn = health.feedback === true; askFeedback(asked); })
    .catch(() => {});  // no buttons: predictions work without them
}

function askFeedback(about) {
  // A new answer (or none): fresh buttons. There is nothing to learn from a blank image.
  asked = about;
  feedbackBox.hidden = !(feedbackOn && about && about.digit !== null);
  if (!about) return;
  confirmButton.hidden = !about.isDigit;
  for (const button of [confirmButton, ...correctDigits.children]) {
    button.disabled = about.isDigit && button.dataset.digit === String(about.digit);  // "wrong, it is" what it said
    button.classList.remove("chosen");
  }
  showFeedbackStatus("", false);
}

async function giveFeedback(label, button) {
  const about = asked;
  if (!about) return;
  const form = new FormData();
  form.append("file", about.blob, about.name);
  form.append("label", String(label));
  if (about.isDigit) form.append("predicted", String(about.digit));
  if (about.strokes && about.strokes.length <= MAX_STROKES_CHARS) form.append("strokes", about.strokes);
  showFeedbackStatus("Saving…", false);
  try {
    const response = await fetch("/feedback", { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (about !== asked) return;  // a newer answer has its own buttons
    if (!response.ok) {
      showFeedbackStatus(body.error || `Not saved: the server answered ${response.status}.`, true);
      return;
    }
    for (const other of [confirmButton, ...correctDigits.children]) other.disabled = true;
    button.classList.add("chosen");
    showFeedbackStatus(body.duplicate ? "Saved before: thank you." : `Saved as ${label}: thank you.`, false);
  } catch (error) {
    if (about === asked) showFeedbackStatus(`Not saved: cannot reach the server (${error.message}).`, true);
  }
}

function showFeedbackStatus(message, isError) {
  feedbackStatus.textContent = message;
  feedbackStatus.classList.toggle("error", isError);
}

// --- modes: one digit, or a number -----------------------------------------------------------

function setMode(next) {
  if (next === mode) return;
  mode = next;
  document.body.classList.toggle("number-mode", mode === "number");
  for (const [name, button] of Object.entries(modeButtons)) button.setAttribute("aria-pressed", String(name === mode));
  canvas.width = MODES[mode].width;  // the strokes stay where they were drawn
  canvas.height = MODES[mode].height;
  canvas.setAttribute("aria-label", MODES[mode].label);
  title.textContent = MODES[mode].title;
  hint.textContent = MODES[mode].hint;
  latest += 1;  // an answer on its way is for the other mode
  if (inflight) inflight.abort();
  redraw();
  showNothing();
  if (!isEmpty()) {
    fromUpload = false;  // the upload, as drawn on the new canvas, is what is read now
    schedulePrediction();
  }
}

for (const [name, button] of Object.entries(modeButtons)) button.addEventListener("click", () => setMode(name));

buildBars();
buildFeedback();
redraw();
