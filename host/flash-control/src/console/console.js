// The Flash console's only script (served from the binary; see mod.rs): on an endpoint's
// page, redraws the chart, the summary and the recent jobs every two seconds.
"use strict";

(function () {
  const canvas = document.getElementById("chart");
  if (!canvas) return;
  const endpoint = canvas.dataset.endpoint;
  const jobs = document.querySelector("#jobs tbody");

  function draw(series, stepMs) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 28;
    ctx.clearRect(0, 0, w, h);
    ctx.font = "11px system-ui, sans-serif";
    const perSecond = series.map((p) => p.count / (stepMs / 1000));
    const latency = series.map((p) => (p.p50_ms == null ? null : p.p50_ms));
    const maxRate = Math.max(1, ...perSecond);
    const maxLatency = Math.max(1, ...latency.filter((v) => v != null));
    const barW = (w - 2 * pad) / series.length;
    ctx.strokeStyle = "#e3e6ee";
    ctx.beginPath();
    ctx.moveTo(pad, h - pad); ctx.lineTo(w - pad, h - pad);
    ctx.stroke();
    ctx.fillStyle = "#3b5bdb";
    perSecond.forEach((v, i) => {
      const bh = (v / maxRate) * (h - 2 * pad);
      ctx.fillRect(pad + i * barW + 1, h - pad - bh, Math.max(1, barW - 2), bh);
    });
    ctx.strokeStyle = "#e8590c";
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    latency.forEach((v, i) => {
      if (v == null) { drawing = false; return; }
      const x = pad + i * barW + barW / 2, y = h - pad - (v / maxLatency) * (h - 2 * pad);
      if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      drawing = true;
    });
    ctx.stroke();
    ctx.fillStyle = "#e8590c";
    latency.forEach((v, i) => {
      if (v == null) return;
      const x = pad + i * barW + barW / 2, y = h - pad - (v / maxLatency) * (h - 2 * pad);
      ctx.beginPath();
      ctx.arc(x, y, 3, 0, 2 * Math.PI);
      ctx.fill();
    });
    ctx.fillStyle = "#6b7385";
    ctx.fillText(maxRate.toFixed(maxRate < 10 ? 1 : 0) + "/s", 2, pad - 8);
    ctx.fillText(maxLatency + " ms", w - pad - 40, pad - 8);
    ctx.fillText("-5 min", pad, h - 8);
    ctx.fillText("now", w - pad - 20, h - 8);
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  // The rows last drawn: the table is rebuilt only when they change, so that a click on a
  // job's link is never lost to a refresh that replaced the link under the pointer.
  let drawnRows = null;

  function fill(rows) {
    if (!jobs) return;
    const key = JSON.stringify(rows);
    if (key === drawnRows) return;
    drawnRows = key;
    jobs.replaceChildren();
    if (rows.length === 0) {
      const tr = jobs.insertRow();
      tr.className = "empty";
      const td = cell(tr, "None yet.", "muted");
      td.colSpan = 4;
      return;
    }
    for (const job of rows) {
      const tr = jobs.insertRow();
      const id = cell(tr, "", "mono");
      const a = document.createElement("a");
      a.href = "/console/endpoints/" + encodeURIComponent(endpoint) + "/jobs/" + encodeURIComponent(job.id);
      a.textContent = job.id;
      id.appendChild(a);
      const status = cell(tr, "");
      const span = document.createElement("span");
      span.className = job.ok ? "status" : "status error";
      span.textContent = job.status;
      status.appendChild(span);
      cell(tr, job.duration, "num");
      cell(tr, job.at, "muted");
    }
  }

  async function refresh() {
    try {
      const res = await fetch("/console/api/endpoints/" + encodeURIComponent(endpoint), { credentials: "same-origin" });
      if (!res.ok) return;
      const data = await res.json();
      draw(data.series, data.stepMs);
      fill(data.jobs);
      const s = data.summary;
      const summary = document.getElementById("summary");
      if (summary) {
        const noun = summary.textContent.includes("requests") ? "requests" : "jobs";
        summary.textContent = s.count + " " + noun + ", p50 " + s.p50 + ", p99 " + s.p99;
      }
      const last = document.getElementById("lasterror");
      if (last && s.lastError) {
        last.textContent = s.lastError.status + " " + s.lastError.at + ": " + (s.lastError.error || "");
        last.className = "error";
      }
    } catch (e) {
      // The server is restarting or gone: try again on the next tick.
    }
  }

  refresh();
  setInterval(refresh, 2000);
})();
