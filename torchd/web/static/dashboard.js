// torchd's dashboard: the one script of its own (the pages work without it). It follows
// a running run's output: <pre data-stream="URL"> gets the Server-Sent Events of URL
// appended as they come, and the `end` event fills in how the run ended.
"use strict";

function followLog(pre) {
  const source = new EventSource(pre.dataset.stream);
  let replaced = false;
  source.onmessage = (event) => {
    if (!replaced) {  // the stream starts with the run's last lines: they replace the page's
      pre.textContent = "";
      replaced = true;
    }
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent += event.data + "\n";
    if (atBottom) {
      pre.scrollTop = pre.scrollHeight;
    }
  };
  source.addEventListener("end", (event) => {
    source.close();
    const end = JSON.parse(event.data);
    const outcome = document.getElementById("outcome");
    if (outcome && end.outcome) {
      outcome.textContent = end.outcome;
      outcome.className = "badge " + (end.outcome === "ok" ? "ok" : "bad");
    }
    const result = document.getElementById("result");
    if (result) {
      result.textContent = end.signal != null ? "signal " + end.signal
        : end.exit_code != null ? "exit " + end.exit_code : "—";
    }
    const duration = document.getElementById("duration");
    if (duration && end.duration != null) {
      duration.textContent = end.duration.toFixed(1) + "s";
    }
    for (const id of ["kill", "live-note"]) {
      const node = document.getElementById(id);
      if (node) {
        node.remove();
      }
    }
    pre.dataset.ended = end.outcome || "";
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const pre of document.querySelectorAll("pre[data-stream]")) {
    followLog(pre);
  }
});
