// The A/B report: each arm's click-through rate with its Wilson interval, and the test's p-value.
"use strict";

function percent(x) { return x === null ? "–" : (100 * x).toFixed(2) + "%"; }

async function refresh() {
  try {
    const report = await api("/ab/report.json");
    const rows = Object.entries(report.arms).map(([arm, stats]) => {
      const row = element("tr");
      [arm, stats.model, String(stats.impressions), String(stats.clicks), percent(stats.ctr),
       percent(stats.ctr_95[0]) + " – " + percent(stats.ctr_95[1])].forEach(v => row.appendChild(element("td", v)));
      return row;
    });
    document.getElementById("arms").replaceChildren(...rows);
    document.getElementById("p_value").textContent = report.p_value === null ? "not yet" : report.p_value.toPrecision(3);
    document.getElementById("test").textContent = report.test;
  } catch (error) {
    showStatus(error.message, true);
  }
}

refresh();
setInterval(refresh, 5000);
