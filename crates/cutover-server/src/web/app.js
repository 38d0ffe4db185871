// The cutover web UI: reads the API with the key kept in local storage, follows each active
// deployment's progress over server-sent events, and offers the operator's actions
// (approve a plan; pause, resume or cancel a deployment) through the same API as the CLI.
"use strict";

// views: the last full status (with progress) of each deployment, by id. The list endpoint
// carries no progress, so rows are drawn from it merged with these.
const state = { key: localStorage.getItem("cutover-key") || "", streams: {}, views: {} };
const ACTIVE = ["pending", "running", "paused"];

function el(tag, text) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

async function problem(r) {
  let detail = r.statusText;
  try { detail = (await r.json()).detail || detail; } catch (_) { /* not JSON */ }
  return new Error(`${r.status}: ${detail}`);
}

async function api(path, method) {
  const init = { method: method || "GET", headers: { "X-API-Key": state.key } };
  if (method === "POST") {
    init.headers["Content-Type"] = "application/json";
    init.body = "{}";
  }
  const r = await fetch(path, init);
  if (!r.ok) throw await problem(r);
  return r.json();
}

// from: "load" for the periodic reload, which clears only its own errors.
function showError(e, from) {
  if (!e && from === "load" && state.errorFrom !== "load") return;
  state.errorFrom = e ? from || "action" : null;
  document.getElementById("error").textContent = e ? e.message : "";
}

function button(label, action, id, run) {
  const b = el("button", label);
  b.type = "button";
  b.id = `${action}-${id}`;
  b.dataset.action = action;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      showError(null);
      const message = await run();
      document.getElementById("message").textContent = message;
    } catch (e) {
      showError(e);
    } finally {
      b.disabled = false;
      load();
    }
  });
  return b;
}

function progressCell(p) {
  const td = el("td");
  td.className = "progress";
  const bar = el("span");
  bar.className = "bar" + (p && p.failed > 0 ? " failed" : "");
  const fill = el("span");
  fill.className = "fill";
  fill.style.width = ((p && p.percent_complete) || 0) + "%";
  bar.appendChild(fill);
  td.appendChild(bar);
  if (p) td.appendChild(el("span", ` ${p.succeeded}/${p.total}`));
  return td;
}

function command(id, name) {
  return button(name, name, id, async () => {
    await api(`/api/deployments/${encodeURIComponent(id)}/${name}`, "POST");
    return `${name} requested for deployment ${id}`;
  });
}

// d: a deployment as listed, or its full status; its progress comes from the last full status.
function deploymentRow(d) {
  const view = state.views[d.id];
  const tr = el("tr");
  tr.id = "dep-" + d.id;
  tr.dataset.status = d.status;
  for (const v of [d.id, d.environment, d.version || "", d.strategy || "", d.status]) tr.appendChild(el("td", v));
  // Why a paused deployment is held (a gate waiting for a person, a failed gate, ...).
  const held = d.held || (view && view.status === d.status && view.held);
  if (held) tr.lastChild.title = held;
  tr.appendChild(progressCell(d.progress || (view && view.progress)));
  const actions = el("td");
  if (["pending", "running"].includes(d.status)) actions.appendChild(command(d.id, "pause"));
  if (d.status === "paused") actions.appendChild(command(d.id, "resume"));
  if (ACTIVE.includes(d.status)) actions.appendChild(command(d.id, "cancel"));
  tr.appendChild(actions);
  return tr;
}

function planRow(p) {
  const tr = el("tr");
  tr.id = "plan-" + p.id;
  tr.dataset.status = p.status;
  const counted = (p.approvals || []).filter(a => a.decision === "approve" && a.approver !== p.created_by).length;
  for (const v of [p.id, p.name, p.firmware_version, p.target_environment, p.strategy, p.status, `${counted}/${p.required_approvals}`]) {
    tr.appendChild(el("td", v));
  }
  const actions = el("td");
  if (p.status === "pending_approval") {
    actions.appendChild(button("approve", "approve", p.id, async () => {
      const r = await api(`/api/deployment-plans/${encodeURIComponent(p.id)}/approve`, "POST");
      return r.approved ? `plan ${p.id} is approved` : `approval recorded; ${r.approvals_needed - r.approvals_counted} more needed`;
    }));
  }
  tr.appendChild(actions);
  return tr;
}

function redraw(view) {
  state.views[view.id] = view;
  const old = document.getElementById("dep-" + view.id);
  if (old) old.replaceWith(deploymentRow(view));
}

// Server-sent events cannot carry headers (EventSource), so the stream is read through fetch.
// A stream ends when the deployment is final, or is aborted when another key logs in.
async function follow(id) {
  if (state.streams[id]) return;
  const stream = new AbortController();
  state.streams[id] = stream;
  try {
    const r = await fetch(`/api/deployments/${encodeURIComponent(id)}/events`, {
      headers: { "X-API-Key": state.key },
      signal: stream.signal,
    });
    if (!r.ok) throw await problem(r);
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const lines = block.split("\n");
        const event = (lines.find(l => l.startsWith("event:")) || "").slice(6).trim();
        const data = lines.filter(l => l.startsWith("data:")).map(l => l.slice(5).replace(/^ /, "")).join("\n");
        if (event === "progress" && data) redraw(JSON.parse(data));
      }
    }
  } catch (e) {
    if (!stream.signal.aborted) showError(e);
  } finally {
    if (state.streams[id] === stream) delete state.streams[id];
  }
}

// Finished deployments do not change: their status is read once.
async function fetchOnce(id) {
  try {
    redraw(await api(`/api/deployments/${encodeURIComponent(id)}`));
  } catch (e) {
    showError(e);
  }
}

async function load() {
  if (!state.key) return;
  try {
    const envs = await api("/api/environments");
    document.querySelector("#environments tbody").replaceChildren(...envs.environments.map(e => {
      const tr = el("tr");
      tr.id = "env-" + e.name;
      for (const v of [e.name, e.stage || "", e.required_approvals, e.auto_rollback ? "yes" : "no"]) tr.appendChild(el("td", v));
      return tr;
    }));
    const plans = await api("/api/deployment-plans?limit=50");
    document.querySelector("#plans tbody").replaceChildren(...plans.plans.map(planRow));
    const deps = await api("/api/deployments?limit=50");
    document.querySelector("#deployments tbody").replaceChildren(...deps.deployments.map(deploymentRow));
    for (const d of deps.deployments) {
      if (ACTIVE.includes(d.status)) follow(d.id);
      else if (!state.views[d.id] || state.views[d.id].status !== d.status) fetchOnce(d.id);
    }
    showError(null, "load");
  } catch (e) {
    showError(e, "load");
  }
}

document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  state.key = document.getElementById("key").value.trim();
  for (const stream of Object.values(state.streams)) stream.abort();
  state.streams = {};
  state.views = {};
  localStorage.setItem("cutover-key", state.key);
  document.getElementById("message").textContent = "";
  showError(null);
  load();
});
load();
setInterval(load, 10000);
