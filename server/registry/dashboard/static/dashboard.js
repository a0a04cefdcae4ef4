// fedward dashboard: polls /ui/api and draws the runs list and a run's page (inline SVG curves).
// No library, no inline script, nothing from another origin. Every text goes in with textContent.
"use strict";

(function () {
  const SIGNIN = "/ui/signin";
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22"];
  const body = document.body;
  const pollMs = Number(body.dataset.pollMs) || 3000;

  async function api(path) {
    const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.status === 401) {
      window.location.assign(SIGNIN);
      throw new Error("signed out");
    }
    if (!response.ok) throw new Error(path + ": HTTP " + response.status);
    return response.json();
  }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  function num(value, digits) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(digits === undefined ? 3 : digits) : "–";
  }

  function when(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  }

  function roundText(run) {
    return run.rounds ? run["rounds-done"] + "/" + run.rounds : String(run["rounds-done"]);
  }

  function statusBadge(status) {
    return el("span", status, { class: "status status-" + status });
  }

  // Poll `load` every pollMs, the next poll after the previous one ended.
  function poll(load) {
    const tick = async function () {
      try {
        if (!document.hidden) await load();
      } catch (err) {
        if (String(err.message) === "signed out") return;
        console.warn(err);
      }
      window.setTimeout(tick, pollMs);
    };
    tick();
  }

  // ------------------------------------------------------------------ runs list
  async function loadRuns() {
    const data = await api("/ui/api/runs");
    const tbody = document.querySelector("#runs tbody");
    const rows = data.runs.map(function (run) {
      const tr = el("tr", null, { "data-run": run["run-id"], "data-status": run.status });
      const link = el("a", run["run-id"], { href: "/ui/runs/" + encodeURIComponent(run["run-id"]) });
      const first = el("td");
      first.appendChild(link);
      tr.appendChild(first);
      const status = el("td");
      status.appendChild(statusBadge(run.status));
      tr.appendChild(status);
      for (const text of [roundText(run), num(run["best-value"]), num(run["test-auc"]), num(run.epsilon, 2),
        run.dataset, run.model, when(run.started)]) {
        tr.appendChild(el("td", text));
      }
      return tr;
    });
    tbody.replaceChildren(...rows);
    document.getElementById("empty").hidden = rows.length > 0;
  }

  // ------------------------------------------------------------------ charts
  function svgEl(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // series: [{name, color, points: [[round, value], ...]}]; yMax null: from the data.
  function drawChart(svg, legend, series, xMax, yMax) {
    const W = 480, H = 220, L = 44, R = 10, T = 10, B = 28;
    const values = series.flatMap(function (s) { return s.points.map(function (p) { return p[1]; }); });
    const top = yMax !== null ? yMax : Math.max(1e-6, ...values) * 1.05;
    const xEnd = Math.max(1, xMax, ...series.flatMap(function (s) { return s.points.map(function (p) { return p[0]; }); }));
    const x = function (r) { return L + (W - L - R) * (r / xEnd); };
    const y = function (v) { return T + (H - T - B) * (1 - Math.min(v, top) / top); };
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    const parts = [];
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      parts.push(svgEl("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      parts.push(svgEl("text", { x: L - 4, y: y(v) + 4, class: "tick", "text-anchor": "end" }, v.toFixed(2)));
    }
    const step = Math.max(1, Math.ceil(xEnd / 10));
    for (let r = 0; r <= xEnd; r += step) {
      parts.push(svgEl("text", { x: x(r), y: H - 10, class: "tick", "text-anchor": "middle" }, r));
    }
    parts.push(svgEl("text", { x: W - R, y: H - 1, class: "tick", "text-anchor": "end" }, "round"));
    let count = 0;
    for (const s of series) {
      if (!s.points.length) continue;
      const line = s.points.map(function (p) { return x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1); }).join(" ");
      parts.push(svgEl("polyline", { points: line, fill: "none", stroke: s.color, "stroke-width": 2 }));
      for (const p of s.points) {
        const dot = svgEl("circle", { cx: x(p[0]), cy: y(p[1]), r: 3, fill: s.color, "data-series": s.name,
          "data-round": p[0] });
        dot.appendChild(svgEl("title", {}, s.name + ", round " + p[0] + ": " + num(p[1])));
        parts.push(dot);
        count++;
      }
    }
    svg.replaceChildren(...parts);
    svg.setAttribute("data-points", String(count));
    legend.replaceChildren(...series.map(function (s) {
      const item = el("span", s.name, { class: "key" });
      const swatch = el("i", null, { class: "swatch" });
      swatch.style.background = s.color;
      item.prepend(swatch);
      return item;
    }));
  }

  function serie(rows, key) {
    return rows.filter(function (r) { return typeof r[key] === "number"; })
      .map(function (r) { return [r.round, r[key]]; });
  }

  // ------------------------------------------------------------------ run page
  function renderSummary(data) {
    const run = data.run;
    const items = [
      ["Status", statusBadge(run.status)], ["Round", roundText(run)],
      ["Best validation AUC", run["best-round"] === null ? "–" : num(run["best-value"]) + " (round " + run["best-round"] + ")"],
      ["Test AUC at best round", num(run["test-auc"])], ["Dataset", run.dataset], ["Model", run.model],
      ["Started", when(run.started)], ["Last update", when(data.updated)], ["fedward", data.fedward || "–"],
    ];
    if (data.reason) items.push(["Reason", data.reason]);
    const nodes = [];
    for (const [term, value] of items) {
      nodes.push(el("dt", term));
      const dd = el("dd", typeof value === "string" ? value : null);
      if (typeof value !== "string") dd.appendChild(value);
      nodes.push(dd);
    }
    document.getElementById("summary").replaceChildren(...nodes);
  }

  function renderCurves(data) {
    const rows = data.server, rounds = data.run.rounds || 0;
    drawChart(document.getElementById("curve-server"), document.getElementById("legend-server"), [
      { name: "val-auc", color: COLORS[0], points: serie(rows, "val-auc") },
      { name: "test-auc", color: COLORS[1], points: serie(rows, "test-auc") },
    ], rounds, 1);
    drawChart(document.getElementById("curve-loss"), document.getElementById("legend-loss"), [
      { name: "train-loss", color: COLORS[2], points: serie(rows, "train-loss") },
    ], rounds, null);
    drawChart(document.getElementById("curve-hospitals"), document.getElementById("legend-hospitals"),
      data.hospitals.map(function (h, i) { return { name: h.name, color: COLORS[i % COLORS.length], points: h["val-auc"] }; }),
      rounds, 1);
  }

  function renderPrivacy(p) {
    const box = document.getElementById("privacy");
    if (p.epsilon === null && p.budget === null) {
      box.replaceChildren(el("p", "No differential privacy: no (epsilon, delta) guarantee.", { class: "muted" }));
      return;
    }
    const text = "epsilon spent " + num(p.epsilon, 2) + (p.delta ? " (delta " + p.delta + ")" : "") +
      (p.budget !== null ? " of " + num(p.budget, 2) + " (" + p["budget-kind"] + ")" : "");
    const nodes = [el("p", text, { id: "privacy-text" })];
    if (p.budget) {
      const bar = el("div", null, { class: "bar" });
      const fill = el("div", null, { class: "fill" });
      fill.style.width = Math.min(100, (100 * (p.epsilon || 0)) / p.budget).toFixed(1) + "%";
      bar.appendChild(fill);
      nodes.push(bar);
    }
    box.replaceChildren(...nodes);
  }

  function renderHospitals(hospitals) {
    const rows = hospitals.map(function (h) {
      const seconds = h["train-seconds"];
      const last = seconds.length ? seconds[seconds.length - 1][1] : null;
      const perRound = seconds.slice(-8).map(function (p) { return p[0] + ": " + p[1].toFixed(1); }).join(", ");
      const reasons = h.reasons.map(function (r) { return "round " + r.round + " " + r.phase + ": " + r.reason; });
      const tr = el("tr", null, { "data-hospital": h.name });
      const cells = [h.name, h.online ? "online" : "offline", when(h["last-seen"]), h.fedward || "not recorded",
        h["train-images"] === null ? "–" : h["train-images"], h["val-images"] === null ? "–" : h["val-images"],
        num(last, 1), perRound || "–", h.rejected, h.failed, reasons.join("; ") || "–"];
      for (const text of cells) tr.appendChild(el("td", text));
      tr.children[1].className = h.online ? "online" : "offline";
      return tr;
    });
    document.querySelector("#hospitals tbody").replaceChildren(...rows);
  }

  function renderDownloads(run, d) {
    const base = "/v1/runs/" + encodeURIComponent(run["run-id"]);
    const links = [];
    if (d["best-model"]) links.push(["Best model (safetensors)", base + "/models/best", run["run-id"] + "-best.safetensors"]);
    if (d["card-md"]) links.push(["Model card (Markdown)", base + "/card.md", run["run-id"] + "-model_card.md"]);
    if (d["card-json"]) links.push(["Model card (JSON)", base + "/card", run["run-id"] + "-model_card.json"]);
    const items = links.map(function (l) {
      const li = el("li");
      li.appendChild(el("a", l[0], { href: l[1], download: l[2] }));
      return li;
    });
    if (!items.length) items.push(el("li", "Nothing to download yet.", { class: "muted" }));
    document.getElementById("downloads").replaceChildren(...items);
  }

  // The model card (JSON) as nested tables; every value through textContent.
  function cardNode(value) {
    if (Array.isArray(value)) {
      if (!value.length) return el("span", "–");
      if (value.every(function (v) { return v && typeof v === "object" && !Array.isArray(v); })) {
        const keys = [...new Set(value.flatMap(Object.keys))];
        const table = el("table", null, { class: "data card-list" });
        const head = el("tr");
        keys.forEach(function (k) { head.appendChild(el("th", k)); });
        table.appendChild(head);
        for (const item of value) {
          const tr = el("tr");
          keys.forEach(function (k) { const td = el("td"); td.appendChild(cardNode(item[k])); tr.appendChild(td); });
          table.appendChild(tr);
        }
        return table;
      }
      return el("span", value.map(function (v) { return typeof v === "object" ? JSON.stringify(v) : v; }).join(", "));
    }
    if (value && typeof value === "object") {
      const table = el("table", null, { class: "card-table" });
      for (const [key, item] of Object.entries(value)) {
        const tr = el("tr");
        tr.appendChild(el("th", key.replace(/_/g, " ")));
        const td = el("td");
        td.appendChild(cardNode(item));
        tr.appendChild(td);
        table.appendChild(tr);
      }
      return table;
    }
    if (value === null || value === undefined || value === "") return el("span", "–");
    return el("span", typeof value === "number" && !Number.isInteger(value) ? num(value, 4) : value);
  }

  let cardShown = false;
  async function renderCard(run, downloads) {
    if (cardShown || !downloads["card-json"]) return;
    const card = await api("/ui/api/runs/" + encodeURIComponent(run["run-id"]) + "/card");
    document.getElementById("card").replaceChildren(cardNode(card));
    cardShown = true;
  }

  async function loadRun() {
    const data = await api("/ui/api/runs/" + encodeURIComponent(body.dataset.run));
    renderSummary(data);
    renderCurves(data);
    renderPrivacy(data.privacy);
    renderHospitals(data.hospitals);
    renderDownloads(data.run, data.downloads);
    await renderCard(data.run, data.downloads);
  }

  if (body.dataset.page === "runs") poll(loadRuns);
  if (body.dataset.page === "run") poll(loadRun);
})();
