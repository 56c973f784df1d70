"use strict";
// Draw a digit; ~150 ms after the ink stops, the canvas goes to POST /predict as a PNG, and the
// newest answer is shown: the digit, its confidence, the ten probabilities and what the network saw.
// When the server stores feedback (GET /health says so), "Right" or "Wrong, it is: d" sends the
// same image with its right digit to POST /feedback.
// In number mode the canvas is wide and goes to POST /read: the number is shown, with a box over each digit.
// With feedback on, each box is a button: selecting it offers the same buttons for that digit, which send
// its crop (its box in the image read, on a margin of that image's background) to POST /feedback.

const STROKE_WIDTH = 280 / 12;
const DEBOUNCE_MS = 150;
const MAX_STROKES_CHARS = 64 * 1024;  // the server's limit for the strokes sent with feedback
const TAP_SLOP = 6;  // CSS pixels a pointer may move on a digit box and still be a click, not a stroke
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
const feedbackQuestion = document.getElementById("feedback-question");
const choices = document.getElementById("choices");
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
let asked = null;        // what the feedback buttons are about: the answer shown, or a digit of the number
let reading = null;      // the number shown: { image (the file read), isNumber, digits (each also feedback's subject) }
let pressed = null;      // the pointerdown on a digit box, until the pointer goes up (a click) or away (a stroke)
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

function isMainButton(event) {  // a pen, a finger, or the mouse's main button
  return event.pointerType !== "mouse" || event.button === 0;
}

function startStroke(event, at = event) {
  fromUpload = false;  // the canvas is sent from now on, with the upload drawn in it
  canvas.setPointerCapture(event.pointerId);  // the canvas follows the pointer, over the digit boxes too
  current = [canvasPoint(at)];
  strokes.push(current);
  redraw();
}

function extendStroke(event) {
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) current.push(canvasPoint(e));
  redraw();
  schedulePrediction();
}

canvas.addEventListener("pointerdown", (event) => {
  if (!isMainButton(event)) return;
  event.preventDefault();
  startStroke(event);
});

canvas.addEventListener("pointermove", (event) => {
  if (current) extendStroke(event);
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
      showReading(body, blob);
    } else if (response.ok) {
      showAnswer(body);
      askFeedback(feedbackSubject({ file: blob, name, strokes: drawn, digit: body.digit, isDigit: body.is_digit }));
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

function showReading(answer, image) {
  errorBox.hidden = true;
  result.classList.toggle("not-digit", !answer.is_number);
  numberOut.textContent = answer.text || "?";
  if (answer.is_number) {
    confidence.textContent = `${(100 * answer.confidence).toFixed(1)} % confident`;
  } else {
    const guess = answer.text ? ` (best guess ${answer.text})` : "";
    confidence.textContent = `Not a number: ${answer.reason}${guess}`;
  }
  const digits = answer.digits.map((digit, i) => feedbackSubject({
    ...digit, isDigit: true, title: `${ordinal(i + 1)} digit`, name: `digit-${i + 1}.png`,
  }));
  reading = { image, isNumber: answer.is_number, digits };
  showBoxes();
  askFeedback(null);  // until a box is selected
  seenDigits.replaceChildren(...digits.map((digit) => {
    const image = document.createElement("img");
    image.src = digit.seen;
    image.alt = `What the network saw of the ${digit.title}, read as ${digit.digit}`;
    return image;
  }));
}

function showBoxes() {
  // Boxes come in the pixels of the image the server read: the canvas, or an uploaded image drawn in it.
  const frame = fromUpload ? placement : { scale: 1, left: 0, top: 0 };
  boxes.replaceChildren();
  if (!reading || !frame) return;  // an upload the browser cannot show
  for (const digit of reading.digits) {
    const [x0, y0, x1, y1] = digit.box.map((v, i) => (i % 2 ? frame.top : frame.left) + frame.scale * v);
    const box = digitBox(digit);
    box.classList.toggle("unclear", !reading.isNumber && digit.confidence < 0.5);
    Object.assign(box.style, { left: `${(100 * x0) / canvas.width}%`, top: `${(100 * y0) / canvas.height}%`,
                               width: `${(100 * (x1 - x0)) / canvas.width}%`,
                               height: `${(100 * (y1 - y0)) / canvas.height}%` });
    boxes.append(box);
  }
}

function digitBox(digit) {
  // With feedback on, a button: a click, a tap or the keyboard selects it; a stroke starting on it still draws.
  const box = document.createElement(feedbackOn ? "button" : "div");
  box.className = "digit-box";
  box.dataset.testid = "digit-box";
  box.dataset.digit = String(digit.digit);
  box.append(document.createElement("span"));
  digit.element = box;
  if (feedbackOn) {
    box.type = "button";
    box.setAttribute("aria-pressed", String(digit === asked));
    box.addEventListener("click", () => selectDigit(digit));
    box.addEventListener("pointerdown", (event) => {
      if (!isMainButton(event)) return;
      box.setPointerCapture(event.pointerId);
      pressed = event;
    });
    box.addEventListener("pointermove", (event) => {
      if (!pressed || Math.hypot(event.clientX - pressed.clientX, event.clientY - pressed.clientY) < TAP_SLOP) return;
      startStroke(event, pressed);  // no click on the box then: the pointer goes up on the canvas
      pressed = null;
      extendStroke(event);
    });
    box.addEventListener("pointerup", () => { pressed = null; });
    box.addEventListener("pointercancel", () => { pressed = null; });
  }
  showDigitBox(digit);
  return box;
}

function showDigitBox(digit) {
  // Its digit and confidence; once feedback on it is saved, the digit given: "0 ✓", or "0 → 6 ✓".
  const { element, saved } = digit;
  const percent = 100 * digit.confidence;
  const chip = element.querySelector("span");
  let label = `${digit.title}: ${digit.digit}, ${percent.toFixed(1)} percent confident`;
  if (saved !== null) {
    chip.textContent = saved === digit.digit ? `${digit.digit} ✓` : `${digit.digit} → ${saved} ✓`;
    label += `; saved as ${saved}`;
  } else {
    const confidence = document.createElement("small");  // hidden on narrow screens, where chips would overlap
    confidence.textContent = ` · ${percent.toFixed(0)} %`;
    chip.replaceChildren(String(digit.digit), confidence);
    if (feedbackOn) label += "; select to say whether it is right";
  }
  element.setAttribute("aria-label", label);
  element.classList.toggle("saved", saved !== null);
}

function ordinal(n) {  // 1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, ... 21st
  const suffix = n % 100 >= 11 && n % 100 <= 13 ? "th" : ["th", "st", "nd", "rd"][n % 10] ?? "th";
  return `${n}${suffix}`;
}

function showNothing() {
  reading = null;
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
  reading = null;
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

// --- feedback: the right digit for the answer shown, or for a digit of the number -------------

const QUESTION = "Is it right? Your answer helps the model learn.";
const SELECT = "Is a digit right or wrong? Select its box to say so: your answer helps the model learn.";

function buildFeedback() {
  for (let digit = 0; digit < 10; digit++) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.digit = String(digit);
    button.textContent = String(digit);
    button.setAttribute("aria-label", `Wrong, it is ${digit}`);
    button.addEventListener("click", () => giveFeedback(digit));
    correctDigits.append(button);
  }
  confirmButton.addEventListener("click", () => giveFeedback(asked.digit));
  fetch("/health")
    .then((response) => response.json())
    .then((health) => {
      feedbackOn = health.feedback === true;
      showBoxes();  // buttons now, if a number came first
      showFeedback();
    })
    .catch(() => {});  // no buttons: predictions work without them
}

function feedbackSubject(fields) {
  // What feedback is about: the image sent (`file`: a Blob, or a Promise of one), the digit shown for it,
  // and what became of the feedback. `title` names a digit of a number ("2nd digit"); the answer has none.
  const fresh = { name: "drawing.png", strokes: null, title: null, saved: null, saving: false };
  return { ...fresh, status: "", failed: false, ...fields };
}

function askFeedback(about) {
  // A new answer, a selected digit, or none: the buttons for it. There is nothing to learn from a blank image.
  asked = about;
  showFeedback();
}

function selectDigit(digit) {
  reading.digits.forEach((other, i) => {
    other.element.setAttribute("aria-pressed", String(other === digit));
    seenDigits.children[i].classList.toggle("selected", other === digit);
  });
  digit.file ??= cropOf(reading.image, digit.box);
  askFeedback(digit);
}

function showFeedback() {
  // The answer's buttons; for a number, a line asking to select a digit, then that digit's buttons.
  const offered = reading ? boxes.childElementCount > 0 : asked !== null && asked.digit !== null;
  feedbackBox.hidden = !(feedbackOn && offered);
  choices.hidden = !asked;
  if (!asked) feedbackQuestion.textContent = SELECT;
  else if (!asked.title) feedbackQuestion.textContent = QUESTION;
  else feedbackQuestion.textContent = `The ${asked.title}, read as ${asked.digit}: is it right?`;
  feedbackStatus.textContent = asked ? asked.status : "";
  feedbackStatus.classList.toggle("error", asked !== null && asked.failed);
  if (!asked) return;
  confirmButton.hidden = !asked.isDigit;
  const chosen = asked.saved === null ? null
    : asked.isDigit && asked.saved === asked.digit ? confirmButton : correctDigits.children[asked.saved];
  for (const button of [confirmButton, ...correctDigits.children]) {
    const said = asked.isDigit && button.dataset.digit === String(asked.digit);  // not "wrong, it is" what it said
    button.disabled = said || asked.saving || asked.saved !== null;  // one answer each
    button.classList.toggle("chosen", button === chosen);
  }
}

async function giveFeedback(label) {
  const about = asked;
  if (!about || about.saving || about.saved !== null) return;
  Object.assign(about, { saving: true, status: "Saving…", failed: false });
  showFeedback();
  const [status, failed] = await post(about, label);
  Object.assign(about, { saving: false, saved: failed ? null : label, status, failed });
  if (about.element) showDigitBox(about);
  if (about === asked) showFeedback();  // else it shows when its digit is selected again
}

async function post(about, label) {
  // POST /feedback: [the status to show, whether it failed].
  const form = new FormData();
  try {
    form.append("file", await about.file, about.name);
  } catch (error) {
    return [`Not saved: cannot cut the digit out of the image (${error.message}).`, true];
  }
  form.append("label", String(label));
  if (about.isDigit) form.append("predicted", String(about.digit));
  if (about.strokes && about.strokes.length <= MAX_STROKES_CHARS) form.append("strokes", about.strokes);
  try {
    const response = await fetch("/feedback", { method: "POST", body: form });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) return [body.error || `Not saved: the server answered ${response.status}.`, true];
    const what = about.title ? ` the ${about.title}` : "";
    return [body.duplicate ? `Saved${what} before: thank you.` : `Saved${what} as ${label}: thank you.`, false];
  } catch (error) {
    return [`Not saved: cannot reach the server (${error.message}).`, true];
  }
}

// --- the crop of a digit of a number, for feedback --------------------------------------------

async function cropOf(file, [x0, y0, x1, y1]) {
  // The digit's box in the image the server read, on a margin of that image's background (as the server
  // crops each digit): a digit alone, as the server's preprocessing expects one, however close its neighbours.
  const image = await createImageBitmap(file);
  const [width, height] = [x1 - x0, y1 - y0];
  const margin = Math.max(2, Math.round(0.1 * Math.max(width, height)));
  const crop = document.createElement("canvas");
  crop.width = width + 2 * margin;
  crop.height = height + 2 * margin;
  const context = crop.getContext("2d");
  context.fillStyle = backgroundOf(image);
  context.fillRect(0, 0, crop.width, crop.height);
  context.clearRect(margin, margin, width, height);  // the image's own pixels, transparent ones too
  context.drawImage(image, x0, y0, width, height, margin, margin, width, height);
  image.close();
  return new Promise((resolve, reject) => crop.toBlob(
    (blob) => (blob ? resolve(blob) : reject(new Error("the browser cannot make a PNG of the digit"))), "image/png"));
}

function backgroundOf(image) {
  // The median colour of the image's border, as the server finds the background (on a small copy: it is quick).
  const scale = Math.min(1, 64 / Math.max(image.width, image.height));
  const small = document.createElement("canvas");
  small.width = Math.max(1, Math.round(scale * image.width));
  small.height = Math.max(1, Math.round(scale * image.height));
  const context = small.getContext("2d", { willReadFrequently: true });
  context.drawImage(image, 0, 0, small.width, small.height);
  const { data, width, height } = context.getImageData(0, 0, small.width, small.height);
  const border = [];  // pixel indices
  for (let x = 0; x < width; x++) border.push(x, (height - 1) * width + x);
  for (let y = 1; y < height - 1; y++) border.push(y * width, y * width + width - 1);
  const median = (channel) => border.map((i) => data[4 * i + channel]).sort((a, b) => a - b)[border.length >> 1];
  return `rgba(${median(0)}, ${median(1)}, ${median(2)}, ${median(3) / 255})`;
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
