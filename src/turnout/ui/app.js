// The turnout dashboard: polls /ui/api/state every second and draws with SVG.
"use strict";
const COLORS = ["#2f6feb", "#d4540f", "#1a7f37", "#8250df", "#bf3989", "#0a7ea4"];
const history = [];  // [{time, models: {name: {answered, latencySum, latencyCount}}}]
const keyInput = document.getElementById("key");
keyInput.value = localStorage.getItem("turnout-key") || "";
keyInput.addEventListener("change", () => localStorage.setItem("turnout-key", keyInput.value));

function el(tag, attrs, text) {
  const node = document.createElementNS(tag === "svg" || ["polyline", "rect", "text", "line"].includes(tag)
    ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function rates(field, per) {
  // per-model series of (delta field) / (delta seconds or delta per) between successive polls
  const series = {};
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1], b = history[i];
    for (const name of Object.keys(b.models)) {
      const before = a.models[name], after = b.models[name];
      if (!before) continue;
      const delta = after[field] - before[field];
      const over = per ? after[per] - before[per] : b.time - a.time;
      (series[name] = series[name] || []).push(over > 0 ? delta / over : 0);
    }
  }
  return series;
}

function axisLabel(top) {
  // the scale's top in plain digits: "0" with no traffic yet, never an exponent
  if (top <= 0) return "0";
  if (top >= 100) return Math.round(top).toLocaleString("en");
  return String(Number(top.toPrecision(3)));
}

function chart(id, series, scale) {
  const svg = document.getElementById(id);
  svg.replaceChildren();
  const legend = document.getElementById(id + "-legend");
  legend.replaceChildren();
  const values = Object.values(series).flat().map((v) => v * scale);
  const top = Math.max(0, ...values);
  let points = 0, i = 0;
  for (const [name, data] of Object.entries(series)) {
    const recent = data.slice(-60);
    const step = 600 / Math.max(1, recent.length - 1);  // the last minute, across the whole width
    const height = (v) => (top > 0 ? (v * scale / top) * 140 : 0);
    const coords = recent.map((v, j) => `${(j * step).toFixed(1)},${(155 - height(v)).toFixed(1)}`);
    points += coords.length;
    const color = COLORS[i % COLORS.length];
    svg.append(el("polyline", { points: coords.join(" "), fill: "none", stroke: color,
      "stroke-width": 2, "data-model": name }));
    // the legend is HTML beside the chart: a long model name wraps, never cut at the chart's edge
    legend.append(el("span", { class: "key", style: `color: ${color}`, "data-model": name }, name));
    i++;
  }
  svg.append(el("text", { x: 596, y: 14, "text-anchor": "end", "font-size": 12, class: "top" }, axisLabel(top)));
  svg.setAttribute("data-points", String(points));
}

function policyText(policy) {
  if (!policy) return "—";
  const { policy: kind, ...rest } = policy;
  return kind + " " + Object.entries(rest).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
}

function models(state) {
  const body = document.querySelector("#models tbody");
  body.replaceChildren();
  for (const m of state.models) {
    const row = el("tr", { "data-model": m.name });
    row.append(el("td", {}, m.name), el("td", {}, (m.default || "—") + (m.pinned ? " (pinned)" : "")));
    const versions = el("td");
    for (const v of m.versions) versions.append(el("span", { class: `state-${v.state}`, title: v.reason }, `${v.version || "·"}:${v.state} `));
    row.append(versions, el("td", { class: "policy" }, policyText(m.policy)));
    row.append(el("td", {}, String(m.requests.success || 0)), el("td", {}, String(m.requests.errors || 0)));
    body.append(row);
  }
}

function routing(state) {
  // one row per (model, variant) under a policy; the rollout and decisions on the model's first row
  const body = document.querySelector("#routing tbody");
  body.replaceChildren();
  for (const m of state.models) {
    const r = m.routing;
    if (!r) continue;
    const rollout = r.rollout ? `step ${r.rollout.step}/${r.rollout.steps} ${r.rollout.state}` +
      (r.rollout.reason ? `: ${r.rollout.reason}` : "") : "—";
    const decisions = r.decisions.map((d) => `${d.decision} (${d.cause}) ×${d.count}`).join(", ") || "—";
    Object.entries(r.variants).forEach(([variant, v], i) => {
      const row = el("tr", { "data-model": m.name, "data-variant": variant });
      row.append(el("td", {}, i ? "" : m.name), el("td", {}, i ? "" : r.policy.policy), el("td", {}, variant),
        el("td", { class: "weight" }, String(v.weight)), el("td", {}, String(v.requests)),
        el("td", {}, String(v.errors)), el("td", { class: "rollout" }, i ? "" : rollout),
        el("td", { class: "decisions" }, i ? "" : decisions));
      body.append(row);
    });
  }
  if (!body.childElementCount) {
    const row = el("tr", { class: "none" });
    row.append(el("td", { colspan: 8 }, "No routing policy in force."));
    body.append(row);
  }
}

function drift(state) {
  const box = document.getElementById("drift");
  box.replaceChildren();
  for (const m of state.models) {
    for (const v of m.drift) {
      box.append(el("h3", {}, `${m.name} v${v.version} (${v.rows} rows)`));
      for (const [feature, f] of Object.entries(v.features)) {
        const figure = el("div", { class: "feature" + (f.psi > v.alert_psi ? " alert" : ""), "data-feature": feature });
        const svg = el("svg", { width: 120, height: 50, viewBox: "0 0 120 50" });
        const n = f.reference.length, w = 120 / n / 2;
        const top = Math.max(...f.reference, ...f.live, 1e-9);
        f.reference.forEach((s, j) => svg.append(el("rect", { x: j * 2 * w, y: 50 - 48 * s / top, width: w, height: 48 * s / top, fill: "#8c959f" })));
        f.live.forEach((s, j) => svg.append(el("rect", { x: j * 2 * w + w, y: 50 - 48 * s / top, width: w, height: 48 * s / top, fill: "#2f6feb" })));
        figure.append(svg, el("div", {}, `${feature}: PSI ${f.psi.toFixed(3)}`));
        box.append(figure);
      }
    }
  }
  if (!box.childElementCount) box.append(el("p", {}, "No drift window completed yet (a profile.json per version, and its window of rows)."));
}

function pipelines(state) {
  // each pipeline's default version, step by step: what it calls, how often it ran, how long it took
  const body = document.querySelector("#pipelines tbody");
  body.replaceChildren();
  for (const m of state.models) {
    m.steps.forEach((s, i) => {
      const row = el("tr", { "data-model": m.name, "data-step": s.name });
      row.append(el("td", {}, i ? "" : `${m.name} v${s.version}`), el("td", {}, `${i + 1}. ${s.name}`),
        el("td", {}, s.kind), el("td", {}, s.calls || "—"), el("td", {}, String(s.runs || 0)),
        el("td", {}, String(s.failed || 0)), el("td", {}, s.runs ? (s.mean_seconds * 1000).toFixed(2) : "—"));
      body.append(row);
    });
  }
  if (!body.childElementCount) {
    const row = el("tr", { class: "none" });
    row.append(el("td", { colspan: 7 }, "No pipeline is served."));
    body.append(row);
  }
}

async function poll() {
  const headers = keyInput.value ? { authorization: `Bearer ${keyInput.value}` } : {};
  try {
    const answer = await fetch("/ui/api/state", { headers });
    if (!answer.ok) throw new Error(`${answer.status} ${(await answer.json()).error || ""}`);
    const state = await answer.json();
    document.getElementById("server").textContent = `v${state.server}`;
    document.getElementById("status").textContent = "";
    const snapshot = { time: state.time, models: {} };
    for (const m of state.models) {
      const r = m.requests;
      snapshot.models[m.name] = { answered: (r.success || 0) + (r.errors || 0), latencySum: r.latency_sum || 0, latencyCount: r.latency_count || 0 };
    }
    history.push(snapshot);
    if (history.length > 61) history.shift();
    chart("throughput", rates("answered"), 1);
    chart("latency", rates("latencySum", "latencyCount"), 1000);
    models(state);
    routing(state);
    pipelines(state);
    drift(state);
  } catch (error) {
    document.getElementById("status").textContent = `cannot read the server's state: ${error.message}`;
  }
}

poll();
setInterval(poll, 1000);
