// The labelling page. Keys: pair — 1 or 2 picks the better completion; rank — press the completions'
// numbers best first, Enter saves, Backspace undoes; rate — a number from 1 to the scale; s skips.
// An answer counts as saved only when the server says so (it has fsynced it).
"use strict";

let current = null, order = [], busy = false;
// Who is labelling (a random id kept by this browser): the item a labeller is shown is theirs for a
// while, so two labellers at once get different items.
const LABELLER = localStorage.getItem("tfpref-labeller") || Math.random().toString(36).slice(2);
localStorage.setItem("tfpref-labeller", LABELLER);
const HELP = {
  pair: "Press 1 or 2 for the better completion, s to skip.",
  rank: "Press the completions' numbers from best to worst, then Enter; Backspace undoes; s skips.",
  rate: "Press a number from 1 (worst) to {scale} (best); s skips.",
};

function showProgress(progress) {
  document.getElementById("progress").textContent = progress.done + " of " + progress.total + " labelled";
}

function render() {
  const item = document.getElementById("item");
  item.replaceChildren();
  if (current === null) return;
  document.getElementById("prompt").textContent = asText(current.prompt);
  document.getElementById("help").textContent = HELP[current.task].replace("{scale}", current.scale);
  const choices = element("div", null, "choices");
  current.completions.forEach((completion, index) => {
    const box = element("div", null, "choice");
    box.id = "completion-" + (index + 1);
    const rank = order.indexOf(index);
    if (rank >= 0) box.classList.add("picked");
    const heading = element("div");
    heading.appendChild(element("span", String(index + 1), "key"));
    if (current.task === "rank" && rank >= 0) heading.appendChild(element("span", "  rank " + (rank + 1)));
    box.appendChild(heading);
    box.appendChild(element("pre", asText(completion)));
    if (current.task === "pair") box.addEventListener("click", () => answer({choice: index}));
    if (current.task === "rank") box.addEventListener("click", () => pick(index));
    choices.appendChild(box);
  });
  item.appendChild(choices);
  if (current.task === "rate") {
    const buttons = element("div");
    for (let r = 1; r <= current.scale; r++) {
      const button = element("button", String(r));
      button.addEventListener("click", () => answer({rating: r}));
      buttons.appendChild(button);
    }
    item.appendChild(buttons);
  }
}

async function next() {
  try {
    const reply = await api("/label/api/next?labeller=" + encodeURIComponent(LABELLER));
    showProgress(reply.progress);
    current = reply.item;
    order = [];
    if (current === null) {
      document.getElementById("prompt").textContent = "";
      document.getElementById("help").textContent = "";
      showStatus("All items are labelled. Thank you!");
    }
    render();
  } catch (error) {
    showStatus(error.message, true);
  }
}

async function answer(body) {
  if (busy || current === null) return;
  busy = true;
  try {
    const reply = await api("/label/api/submit", Object.assign({item_id: current.item_id}, body));
    showStatus(reply.duplicate ? "already saved" : "saved");
    showProgress(reply.progress);
    await next();
  } catch (error) {
    showStatus("not saved: " + error.message, true);
  } finally {
    busy = false;
  }
}

async function skip() {
  if (busy || current === null) return;
  busy = true;
  try {
    await api("/label/api/skip", {item_id: current.item_id, labeller: LABELLER});
    showStatus("skipped");
    await next();
  } catch (error) {
    showStatus(error.message, true);
  } finally {
    busy = false;
  }
}

function pick(index) {
  if (order.includes(index)) return;
  order.push(index);
  render();
}

document.addEventListener("keydown", event => {
  if (current === null || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "s") return skip();
  const digit = Number(event.key);
  if (current.task === "pair" && (event.key === "1" || event.key === "2")) return answer({choice: digit - 1});
  if (current.task === "rate" && digit >= 1 && digit <= current.scale) return answer({rating: digit});
  if (current.task === "rank") {
    if (digit >= 1 && digit <= current.completions.length) return pick(digit - 1);
    if (event.key === "Backspace") { order.pop(); return render(); }
    if (event.key === "Enter" && order.length === current.completions.length) return answer({order: order});
  }
});

next();
