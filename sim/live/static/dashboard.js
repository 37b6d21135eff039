// ccsim dashboard: start a run through the runs API and poll it every second.
// Plain JavaScript, no build step, no network access beyond this gateway.
"use strict";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
let scenarios = {};
let pollTimer = null;
let currentRun = null;
const SOURCE_LABEL = { serve: " (ccsim serve --scenario)", dir: " (--scenarios-dir)", library: "" };
const ACTIVE = new Set(["running", "cancelling"]);

const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const fmtPct = (r) => (r === null || r === undefined ? "–" : (100 * r).toFixed(2) + " %");
const fmtMs = (ms) => (ms === null || ms === undefined ? "–" : Math.round(ms).toLocaleString("en-US") + " ms");
const fmtRate = (r) => (r === null || r === undefined ? "–" : r.toFixed(2) + " /s");

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const fields = (body.errors || []).map((e) => `${e.field}: ${e.reason}`).join("\n");
    throw new Error(`${response.status} ${body.detail || response.statusText}${fields ? "\n" + fields : ""}`);
  }
  return body;
}

function fillKnobs(name) {
  const s = scenarios[name];
  if (!s) return;
  const direct = s.direct_share ? ` Direct rail (CryptoCity): ${Math.round(s.direct_share * 100)} % of zone payments.` : "";
  $("scenario-description").textContent = (s.description || "") + direct;
  $("rate-scale").value = s.rate_scale;
  $("deadline-ms").value = s.deadline_ms;
  $("duration").value = s.duration_s;
  $("outage-start").value = s.exchange_outage ? s.exchange_outage.start_s : "";
  $("outage-duration").value = s.exchange_outage ? s.exchange_outage.duration_s : 600;
}

async function loadScenarios() {
  const list = await api("/v1/scenarios");
  const select = $("scenario");
  select.innerHTML = "";
  for (const s of list) {
    if (!s.valid) continue;
    scenarios[s.name] = s;
    const option = document.createElement("option");
    option.value = s.name;
    option.textContent = s.name + (SOURCE_LABEL[s.source] || "");
    select.appendChild(option);
  }
  fillKnobs(select.value);
}

function overridesFromForm() {
  const s = scenarios[$("scenario").value];
  const out = {};
  const num = (id) => ($(id).value === "" ? null : Number($(id).value));
  const scale = num("rate-scale");
  if (scale !== null && scale !== s.rate_scale) out["arrivals.rate_scale"] = scale;
  const deadline = num("deadline-ms");
  if (deadline !== null && deadline !== s.deadline_ms) out["network.deadline_ms"] = deadline;
  const duration = num("duration");
  if (duration !== null && duration !== s.duration_s) {
    out["duration_s"] = duration;
    if (s.warmup_s >= duration) out["warmup_s"] = 0;
  }
  const start = num("outage-start");
  const length = num("outage-duration");
  const before = s.exchange_outage;
  if (start === null) {
    if (before) out["services.exchange.outages"] = [];
  } else if (!before || before.start_s !== start || before.duration_s !== length) {
    out["services.exchange.outages"] = [{ start_s: start, duration_s: length || 600 }];
  }
  return out;
}

function showRun(run) {
  const p = run.progress;
  const k = run.kpis || {};
  $("progress-bar").style.width = (100 * p.fraction).toFixed(1) + "%";
  const clock = new Date(p.virtual_s * 1000).toISOString().substring(11, 19);
  let status = `Run ${run.id} (${run.scenario}, seed ${run.seed}): ${run.status} — simulated ${clock}, ` +
    `${fmtInt(p.payments)} payments, ${run.wall_s.toFixed(1)} s wall`;
  if (run.error) status += ` — ${run.error}`;
  $("run-status").textContent = status;
  $("run-status").dataset.status = run.status;
  $("kpi-payments").textContent = fmtInt(p.payments);
  $("kpi-approved").textContent = fmtInt(k.approved);
  $("kpi-approval-rate").textContent = fmtPct(k.approval_rate);
  $("kpi-p99").textContent = fmtMs(k.p99_latency_ms);
  $("kpi-throughput").textContent = fmtRate(k.approved_per_s);
  $("kpi-stand-in").textContent = fmtInt(k.stand_in);
  $("kpi-deadline").textContent = fmtInt(k.deadline_missed);
  const inv = $("kpi-invariants");
  if (run.invariants) {
    inv.textContent = run.invariants.ok ? "all hold, reconciled" : `${run.invariants.violations.length} violated`;
    inv.className = run.invariants.ok ? "ok" : "bad";
  } else {
    inv.textContent = "checked when the run ends";
    inv.className = "";
  }
  drawChart(run.history || []);
  if (run.report_url) {
    $("report").innerHTML = "";
    const a = document.createElement("a");
    a.id = "report-link";
    a.href = run.report_url;
    a.target = "_blank";
    a.textContent = "Open the full report of this run";
    $("report").appendChild(a);
  }
}

function drawChart(history) {
  if (!window.Plotly || history.length === 0) return;
  const hours = history.map((h) => h.virtual_s / 3600);
  const traces = [
    { x: hours, y: history.map((h) => 100 * h.approval_rate), name: "approval rate (%)", mode: "lines" },
    { x: hours, y: history.map((h) => h.p99_latency_ms), name: "p99 latency so far (ms)", mode: "lines", yaxis: "y2" },
  ];
  const layout = {
    margin: { t: 10, r: 60, b: 40, l: 50 }, legend: { orientation: "h" },
    xaxis: { title: { text: "simulated hours" } },
    yaxis: { title: { text: "approval rate (%)" }, rangemode: "tozero" },
    yaxis2: { title: { text: "p99 latency (ms)" }, overlaying: "y", side: "right", rangemode: "tozero" },
  };
  window.Plotly.react("chart", traces, layout, { displayModeBar: false, responsive: true });
}

async function poll(runId) {
  try {
    const run = await api(`/v1/runs/${runId}`);
    showRun(run);
    if (ACTIVE.has(run.status)) {
      pollTimer = setTimeout(() => poll(runId), POLL_MS);
    } else {
      runEnded();
      refreshRuns();
    }
  } catch (err) {
    $("form-error").textContent = String(err.message || err);
    runEnded();
  }
}

function runEnded() {
  currentRun = null;
  $("start").disabled = false;
  $("cancel").hidden = true;
}

async function cancelRun() {
  if (!currentRun) return;
  $("cancel").disabled = true;
  try {
    showRun(await api(`/v1/runs/${currentRun}`, { method: "DELETE" }));
  } catch (err) {
    $("form-error").textContent = String(err.message || err);
  }
}

async function refreshRuns() {
  const runs = await api("/v1/runs");
  const body = $("runs-body");
  body.innerHTML = "";
  for (const run of runs) {
    const tr = document.createElement("tr");
    const cells = [run.id, run.scenario, run.status, fmtPct((run.kpis || {}).approval_rate),
                   fmtMs((run.kpis || {}).p99_latency_ms)];
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    const td = document.createElement("td");
    if (run.report_url) {
      const a = document.createElement("a");
      a.href = run.report_url;
      a.target = "_blank";
      a.textContent = "report";
      td.appendChild(a);
    }
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

async function startRun(event) {
  event.preventDefault();
  $("form-error").textContent = "";
  $("report").innerHTML = "";
  if (pollTimer) clearTimeout(pollTimer);
  const request = {
    scenario: $("scenario").value,
    overrides: overridesFromForm(),
    seed: Number($("seed").value || 1),
  };
  $("start").disabled = true;
  try {
    const run = await api("/v1/runs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    currentRun = run.id;
    $("cancel").hidden = false;
    $("cancel").disabled = false;
    showRun(run);
    poll(run.id);
  } catch (err) {
    $("form-error").textContent = String(err.message || err);
    $("start").disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("scenario").addEventListener("change", (e) => fillKnobs(e.target.value));
  $("run-form").addEventListener("submit", startRun);
  $("cancel").addEventListener("click", cancelRun);
  loadScenarios().catch((err) => { $("form-error").textContent = String(err.message || err); });
  refreshRuns().catch(() => {});
});
