// The chat page: the conversation is kept here and sent whole each turn; the reply streams back as
// JSON lines ({"text": piece} ..., then {"done": true, ...} or {"error": ...}).
"use strict";

const messages = [];
const conversation = document.getElementById("conversation");
let conditioning = "none";  // the model's, from /api/info: which preference control the page shows

// `note` (text) goes beside the role: the preference an assistant's reply was asked for.
function addMessage(role, content, note) {
  const box = element("div", null, "message " + role);
  const heading = element("div", role, "role");
  if (note) heading.appendChild(element("span", note, "preference"));
  box.appendChild(heading);
  const text = element("div", content, "text");
  box.appendChild(text);
  conversation.appendChild(box);
  return text;
}

function number(id) { return Number(document.getElementById(id).value); }

// This turn's preference for /api/chat (undefined: the model takes none) and its text for the page.
function chosenPreference() {
  if (conditioning === "control_tokens") {
    const aligned = document.querySelector('input[name="aligned"]:checked').value === "aligned";
    return [{aligned: aligned}, aligned ? "aligned" : "misaligned"];
  }
  if (conditioning === "preference_vector") {
    const score = number("preference_score"), length = number("preference_length");
    return [{score: score, length: length}, "score " + score + ", length " + length];
  }
  return [undefined, ""];
}

async function send(event) {
  event.preventDefault();
  const input = document.getElementById("message");
  const content = input.value;
  if (!content.trim()) return;
  input.value = "";
  const system = document.getElementById("system").value;
  if (messages.length === 0 && system.trim()) messages.push({role: "system", content: system});
  messages.push({role: "user", content: content});
  const [preference, preferenceText] = chosenPreference();
  const question = addMessage("user", content);
  const reply = addMessage("assistant", "", preferenceText);
  document.getElementById("send").disabled = true;
  showStatus("generating…");
  const body = {messages: messages, max_new_tokens: number("max_new_tokens"), temperature: number("temperature"),
                top_k: number("top_k"), top_p: number("top_p"), seed: number("seed"), preference: preference};
  try {
    const response = await fetch("/api/chat", {method: "POST", headers: headers(), body: JSON.stringify(body)});
    if (!response.ok) {
      let reason = "HTTP " + response.status;
      try { reason = (await response.json()).error || reason; } catch (e) { /* keep the status */ }
      throw new Error(reason);
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "", done = null;
    for (;;) {
      const {value, done: ended} = await reader.read();
      if (ended) break;
      pending += decoder.decode(value, {stream: true});
      let newline;
      while ((newline = pending.indexOf("\n")) >= 0) {
        const line = JSON.parse(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
        if (line.error) throw new Error(line.error);
        if (line.text !== undefined) reply.textContent += line.text;
        if (line.done) done = line;
      }
    }
    messages.push({role: "assistant", content: reply.textContent});
    showStatus(done ? (done.finished ? "done" : "stopped at max new tokens") + " (" + done.num_tokens + " tokens)" : "done");
  } catch (error) {
    messages.pop();  // the user's turn had no reply: it is not kept
    question.parentNode.remove();
    reply.parentNode.remove();
    input.value = content;
    showStatus(error.message, true);
  } finally {
    document.getElementById("send").disabled = false;
  }
}

document.getElementById("form").addEventListener("submit", send);
document.getElementById("message").addEventListener("keydown", event => {
  if (event.key === "Enter" && !event.shiftKey) send(event);
});
document.getElementById("clear").addEventListener("click", () => {
  messages.length = 0;
  conversation.replaceChildren();
  showStatus("");
});
api("/api/info").then(info => {
  document.getElementById("model").textContent = "Model " + info.model + ", version " + info.version +
      (info.chat ? " (chat template)" : " (no chat template: the last message is completed as text)");
  conditioning = info.conditioning;
  document.getElementById("preference_tokens").hidden = conditioning !== "control_tokens";
  document.getElementById("preference_vector").hidden = conditioning !== "preference_vector";
}).catch(error => showStatus(error.message, true));
