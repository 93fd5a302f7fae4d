// The A/B visitor page: each request is answered by one of two models at random (the page never
// knows which); a click on the headline is logged against that impression.
"use strict";

let impression = null;
const headline = document.getElementById("headline");

document.getElementById("form").addEventListener("submit", async event => {
  event.preventDefault();
  headline.hidden = true;
  showStatus("writing…");
  try {
    const reply = await api("/ab/api/impression", {prompt: document.getElementById("prompt").value});
    impression = reply.impression_id;
    headline.textContent = reply.completion;
    headline.hidden = false;
    showStatus("");
  } catch (error) {
    showStatus(error.message, true);
  }
});

headline.addEventListener("click", async () => {
  if (impression === null) return;
  try {
    await api("/ab/api/click", {impression_id: impression});
    showStatus("clicked");
  } catch (error) {
    showStatus(error.message, true);
  }
});
