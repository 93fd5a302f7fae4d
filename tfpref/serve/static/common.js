// Shared by every page. Untrusted text (model outputs, data) only ever goes into the page through
// textContent, never innerHTML: a completion holding <script> shows as text.
"use strict";

const TOKEN = new URLSearchParams(window.location.search).get("token");

function headers() {
  const h = {"Content-Type": "application/json"};
  if (TOKEN) h["Authorization"] = "Bearer " + TOKEN;
  return h;
}

// POST (or GET without a body) JSON to the server; resolves to the parsed reply, rejects with its error.
async function api(path, body) {
  const options = body === undefined ? {headers: headers()} : {method: "POST", headers: headers(), body: JSON.stringify(body)};
  const response = await fetch(path, options);
  let reply;
  try { reply = await response.json(); } catch (e) { reply = {error: "the server sent no JSON (" + response.status + ")"}; }
  if (!response.ok) throw new Error(reply.error || ("HTTP " + response.status));
  return reply;
}

// A new element with plain text inside (the only way text enters the page).
function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// A prompt or completion as text: a conversation (list of messages) is shown as "role: content" lines.
function asText(value) {
  if (Array.isArray(value)) return value.map(m => m.role + ": " + m.content).join("\n");
  return String(value);
}

function showStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "status error" : "status";
}
