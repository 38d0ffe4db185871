// The cutover web UI: reads the API with the key kept in local storage, and follows
// each active deployment's progress over server-sent events.
"use strict";

const state = { key: localStorage.getItem("cutover-key") || "", streams: {} };

function el(tag, text) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  return e;
}

async function api(path) {
  const r = await fetch(path, { headers: { "X-API-Key": state.key } });
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(`${r.status}: ${detail}`);
  }
  return r.json();
}

function progressCell(d) {
  const td = el("td");
  const bar = el("span");
  bar.className = "bar" + (d.progress && d.progress.failed > 0 ? " failed" : "");
  const fill = el("span");
  fill.className = "fill";
  fill.style.display = "block";
  fill.style.width = ((d.progress && d.progress.percent_complete) || 0) + "%";
  bar.appendChild(fill);
  td.appendChild(bar);
  if (d.progress) td.appendChild(el("span", ` ${d.progress.succeeded}/${d.progress.total}`));
  return td;
}

function deploymentRow(d) {
  const tr = el("tr");
  tr.id = "dep-" + d.id;
  for (const v of [d.id, d.environment, d.version || "", d.strategy || "", d.status]) tr.appendChild(el("td", v));
  tr.appendChild(progressCell(d));
  return tr;
}

// Server-sent events cannot carry headers, so progress is polled through fetch streaming.
async function follow(id) {
  if (state.streams[id]) return;
  state.streams[id] = true;
  try {
    const r = await fetch(`/api/deployments/${encodeURIComponent(id)}/events`, { headers: { "X-API-Key": state.key } });
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = block.split("\n").filter(l => l.startsWith("data:")).map(l => l.slice(5).trim()).join("\n");
        if (block.includes("event: progress") && data) {
          const d = JSON.parse(data);
          const old = document.getElementById("dep-" + d.id);
          if (old) old.replaceWith(deploymentRow(d));
        }
      }
    }
  } catch (e) {
    document.getElementById("error").textContent = e.message;
  } finally {
    delete state.streams[id];
  }
}

async function load() {
  if (!state.key) return;
  try {
    document.getElementById("error").textContent = "";
    const envs = await api("/api/environments");
    const eb = document.querySelector("#environments tbody");
    eb.replaceChildren(...envs.environments.map(e => {
      const tr = el("tr");
      for (const v of [e.name, e.stage || "", e.required_approvals, e.auto_rollback ? "yes" : "no"]) tr.appendChild(el("td", v));
      return tr;
    }));
    const deps = await api("/api/deployments?limit=50");
    const db = document.querySelector("#deployments tbody");
    db.replaceChildren(...deps.deployments.map(deploymentRow));
    for (const d of deps.deployments) {
      if (["pending", "running", "paused"].includes(d.status)) follow(d.id);
    }
  } catch (e) {
    document.getElementById("error").textContent = e.message;
  }
}

document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  state.key = document.getElementById("key").value.trim();
  localStorage.setItem("cutover-key", state.key);
  load();
});
load();
setInterval(load, 10000);
