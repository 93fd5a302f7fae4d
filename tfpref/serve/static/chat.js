// The chat page: the conversation is kept here and sent whole each turn; the reply streams back as
// JSON lines ({"text": piece} ..., then {"done": true, ...} or {"error": ...}).
"use strict";

const messages = [];
const conversation = document.getElementById("conversation");

function addMessage(role, content) {
  const box = element("div", null, "message " + role);
  box.appendChild(element("div", role, "role"));
  const text = element("div", content, "text");
  box.appendChild(text);
  conversation.appendChild(box);
  return text;
}

function number(id) { return Number(document.getElementById(id).value); }

async function send(event) {
  event.preventDefault();
  const input = document.getElementById("message");
  const content = input.value;
  if (!content.trim()) return;
  input.value = "";
  const system = document.getElementById("system").value;
  if (messages.length === 0 && system.trim()) messages.push({role: "system", content: system});
  messages.push({role: "user", content: content});
  const question = addMessage("user", content);
  const reply = addMessage("assistant", "");
  document.getElementById("send").disabled = true;
  showStatus("generating…");
  const body = {messages: messages, max_new_tokens: number("max_new_tokens"), temperature: number("temperature"),
                top_k: number("top_k"), top_p: number("top_p"), seed: number("seed")};
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
}).catch(error => showStatus(error.message, true));
