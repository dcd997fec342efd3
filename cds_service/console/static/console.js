/* Card console: calls the patient-view service as an EHR would and shows its cards.
   Every value from data goes into the page through textContent or DOM attributes;
   innerHTML is used only for card details rendered on the server (raw HTML disabled). */
"use strict";
(function () {
  const API = "api/";            // relative to /console/
  const SVG_NS = "http://www.w3.org/2000/svg";
  let service = "bone-health-patient-view";
  let run = 0;                   // a newer patient choice makes older answers stale

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function status(message, isError) {
    const s = $("status");
    s.textContent = message;
    s.classList.toggle("error", !!isError);
  }

  async function postJson(url, body) {
    const resp = await fetch(url, {
      method: "POST",
      // X-CDS-Console marks the hook calls as the console's in the audit (the report leaves them out)
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CDS-Console": "1" },
      body: JSON.stringify(body),
    });
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    return { ok: resp.ok, status: resp.status, data };
  }

  function errorText(r) {
    const d = r.data || {};
    if (d.error) return d.error;
    if (d.resourceType === "OperationOutcome" && d.issue && d.issue[0]) return d.issue[0].diagnostics || "error";
    return "HTTP " + r.status;
  }

  // ---- patients ------------------------------------------------------------------------
  async function loadSamples() {
    const resp = await fetch(API + "samples");
    const data = await resp.json();
    const list = $("patients");
    for (const s of data.samples) {
      const btn = el("button", { type: "button", class: "patient-btn", "data-sample": s.number },
        el("span", { class: "pid", text: s.patient }),
        el("span", { class: "ptitle", text: s.number + ". " + s.title }));
      btn.addEventListener("click", () => {
        for (const b of document.querySelectorAll(".patient-btn")) b.classList.remove("selected");
        btn.classList.add("selected");
        openChart({ sample: s.number });
      });
      list.append(el("li", {}, btn));
    }
    const histories = data.histories || [];
    const hlist = $("histories");
    for (const h of histories) {
      const btn = el("button", { type: "button", class: "patient-btn", "data-history": h.id },
        el("span", { class: "pid", text: h.id }),
        el("span", { class: "ptitle", text: h.title }));
      btn.addEventListener("click", () => {
        for (const b of document.querySelectorAll(".patient-btn")) b.classList.remove("selected");
        btn.classList.add("selected");
        openChart({ history: h.id });
      });
      hlist.append(el("li", {}, btn));
    }
    $("histories-section").hidden = !histories.length;
  }

  function runPasted() {
    let bundle;
    try {
      bundle = JSON.parse($("bundle").value);
    } catch (e) {
      status("The pasted text is not JSON: " + e.message, true);
      return;
    }
    for (const b of document.querySelectorAll(".patient-btn")) b.classList.remove("selected");
    const body = { bundle };
    const pid = $("patient-id").value.trim();
    if (pid) body.patient = pid;
    openChart(body);
  }

  // ---- one chart opening: request → service → cards ------------------------------------
  async function openChart(body) {
    const mine = ++run;
    status("Building the hook request…");
    for (const id of ["banner", "chart-panel", "therapy-panel", "cards-panel", "request-panel"]) $(id).hidden = true;
    const r = await postJson(API + "request", body);
    if (mine !== run) return;
    if (!r.ok) { status("Cannot build the request: " + errorText(r), true); return; }
    const req = r.data.request;
    service = r.data.service || service;
    $("banner-patient").textContent = req.context.patientId;
    $("banner-hook").textContent = req.hookInstance;
    $("banner").hidden = false;
    $("request-json").textContent = JSON.stringify(req, null, 2);
    $("request-panel").hidden = false;
    drawChart(r.data.tscores || []);
    $("chart-panel").hidden = false;
    drawTherapy(r.data.therapies || { drugs: [], not_used: [] });
    $("therapy-panel").hidden = false;

    status("Calling POST /cds-services/" + service + "…");
    const hook = await postJson("../cds-services/" + encodeURIComponent(service), req);
    if (mine !== run) return;
    if (!hook.ok) { status("The service answered " + hook.status + ": " + errorText(hook), true); return; }
    const cards = (hook.data && hook.data.cards) || [];
    const md = await postJson(API + "markdown", { texts: cards.map((c) => (typeof c.detail === "string" ? c.detail : "")) });
    if (mine !== run) return;
    const html = md.ok ? md.data.html : null;
    renderCards(cards, html);
    status(cards.length + (cards.length === 1 ? " card" : " cards") + " for " + req.context.patientId + ".");
  }

  // ---- cards -----------------------------------------------------------------------------
  const INDICATORS = { critical: "Critical", warning: "Warning", info: "Info" };

  function renderCards(cards, html) {
    const box = $("cards");
    box.replaceChildren();
    $("card-count").textContent = "(" + cards.length + ")";
    if (!cards.length) box.append(el("p", { class: "hint", text: "The service returned no cards." }));
    cards.forEach((card, i) => box.append(renderCard(card, html ? html[i] : null)));
    $("cards-panel").hidden = false;
  }

  function safeUrl(u) {
    try {
      const url = new URL(String(u), document.baseURI);
      return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
    } catch (e) { return null; }
  }

  function link(label, url) {
    const href = safeUrl(url);
    if (!href) return el("span", { text: label });
    return el("a", { href, target: "_blank", rel: "noopener noreferrer", text: label });
  }

  function renderCard(card, detailHtml) {
    const indicator = INDICATORS[card.indicator] ? card.indicator : "info";
    const body = el("div", { class: "body" });
    const node = el("article", { class: "card indicator-" + indicator, "data-uuid": card.uuid, "data-indicator": indicator },
      el("div", { class: "bar" }), body);

    body.append(el("div", { class: "head" },
      el("p", { class: "summary", text: card.summary || "" }),
      el("span", { class: "badge", text: INDICATORS[indicator] })));

    const src = card.source || {};
    const meta = el("div", { class: "meta" });
    meta.append("Source: ", src.url ? link(src.label || src.url, src.url) : el("span", { text: src.label || "" }));
    if (src.topic && (src.topic.display || src.topic.code)) {
      meta.append(" · Topic: ", el("span", { class: "topic", text: src.topic.display || src.topic.code }));
    }
    body.append(meta);

    if (detailHtml) {
      const d = el("div", { class: "detail" });
      d.innerHTML = detailHtml; // server-rendered markdown, raw HTML disabled (see console/markdown.py)
      body.append(d);
    } else if (card.detail) {
      body.append(el("div", { class: "detail", text: card.detail }));
    }

    if (Array.isArray(card.links) && card.links.length) {
      const ul = el("ul", { class: "links" });
      for (const l of card.links) ul.append(el("li", {}, link(l.label || l.url, l.url)));
      body.append(ul);
    }

    const fb = el("span", { class: "feedback-msg", role: "status" });
    if (Array.isArray(card.suggestions) && card.suggestions.length) {
      const row = el("div", { class: "suggestions" });
      const panel = el("div", { class: "suggestion-panel" });
      panel.hidden = true;
      for (const s of card.suggestions) {
        const btn = el("button", { type: "button", class: "suggestion-btn" + (s.isRecommended ? " recommended" : ""),
          "data-uuid": s.uuid, text: s.label || "Suggestion" });
        btn.addEventListener("click", () => {
          const wasOpen = btn.classList.contains("open");
          for (const b of row.querySelectorAll(".suggestion-btn")) b.classList.remove("open");
          if (wasOpen) { panel.hidden = true; return; }
          btn.classList.add("open");
          showSuggestion(panel, card, s, fb);
        });
        row.append(btn);
      }
      body.append(row, panel);
    }
    body.append(dismissRow(card, node, fb));
    return node;
  }

  function showSuggestion(panel, card, s, fb) {
    panel.replaceChildren();
    panel.append(el("p", { class: "action-desc", text: s.label || "" }));
    for (const a of s.actions || []) {
      panel.append(el("p", { class: "hint", text: (a.type || "") + (a.description ? ": " + a.description : "") }));
      if (a.resource !== undefined) panel.append(el("pre", { class: "fhir-json", text: JSON.stringify(a.resource, null, 2) }));
      else if (a.resourceId !== undefined) panel.append(el("pre", { class: "fhir-json", text: JSON.stringify(a.resourceId, null, 2) }));
    }
    const accept = el("button", { type: "button", class: "primary accept-btn", text: "Accept" });
    accept.disabled = !card.uuid || !s.uuid;
    accept.addEventListener("click", async () => {
      accept.disabled = true;
      const item = { card: card.uuid, outcome: "accepted", acceptedSuggestions: [{ id: s.uuid }],
                     outcomeTimestamp: new Date().toISOString() };
      const ok = await sendFeedback(item, fb);
      if (!ok) accept.disabled = false;
    });
    panel.append(accept, " ", fb);
    panel.hidden = false;
  }

  function dismissRow(card, node, fb) {
    const row = el("div", { class: "dismiss" });
    const select = el("select", { "aria-label": "Reason for dismissing", class: "override-select" });
    const reasons = Array.isArray(card.overrideReasons) ? card.overrideReasons : [];
    select.append(el("option", { value: "", text: reasons.length ? "Reason for dismissing…" : "(no reason offered)" }));
    reasons.forEach((r, i) => select.append(el("option", { value: String(i), text: r.display || r.code })));
    const comment = el("input", { type: "text", placeholder: "Comment (optional)", "aria-label": "Comment" });
    const btn = el("button", { type: "button", class: "secondary dismiss-btn", text: "Dismiss" });
    btn.disabled = !card.uuid;
    btn.addEventListener("click", async () => {
      const item = { card: card.uuid, outcome: "overridden", outcomeTimestamp: new Date().toISOString() };
      if (select.value !== "") {
        item.overrideReason = { reason: reasons[Number(select.value)] };
        if (comment.value.trim()) item.overrideReason.userComment = comment.value.trim();
      } else if (reasons.length) {
        fb.textContent = "Choose a reason first";
        fb.className = "feedback-msg fail";
        if (!fb.isConnected) row.append(fb);
        return;
      }
      btn.disabled = true;
      if (!fb.isConnected) row.append(fb);
      if (await sendFeedback(item, fb)) node.classList.add("dismissed");
      else btn.disabled = false;
    });
    row.append(select, comment, btn);
    return row;
  }

  async function sendFeedback(item, fb) {
    fb.className = "feedback-msg";
    fb.textContent = "Sending feedback…";
    let r;
    try {
      r = await postJson("../cds-services/" + encodeURIComponent(service) + "/feedback", { feedback: [item] });
    } catch (e) {
      r = { ok: false, status: 0, data: { error: String(e) } };
    }
    if (r.status === 200) {
      fb.textContent = "Feedback recorded";
      fb.className = "feedback-msg ok";
      return true;
    }
    fb.textContent = "Feedback not recorded: " + errorText(r);
    fb.className = "feedback-msg fail";
    return false;
  }

  // ---- therapy timeline (rules §6.1) -------------------------------------------------------
  function drawTherapy(t) {
    const box = $("therapy");
    box.replaceChildren();
    if (!t.drugs.length && !t.not_used.length) {
      box.append(el("p", { class: "chart-empty", text: "No medication records the rules read." }));
      return;
    }
    if (t.drugs.length) {
      const table = el("table", { class: "therapy-table" });
      table.append(el("thead", {}, el("tr", {}, ...["Drug", "State", "Given", "First", "Last dose", "Doses",
        "Months covered", "Records"].map((h) => el("th", { text: h })))));
      const tbody = el("tbody");
      for (const d of t.drugs) {
        const recs = d.records.map((r) => r.kind + " " + r.status).join(", ");
        tbody.append(el("tr", { "data-drug": d.drug },
          el("td", { text: d.drug + (d.mode === "dose" ? " (dose by dose)" : "") }),
          el("td", { class: "state", text: d.state + (d.notes.length ? " — " + d.notes.join("; ") : "") }),
          el("td", { text: d.period }),
          el("td", { text: d.first || "" }),
          el("td", { text: d.last_dose || "" }),
          el("td", { text: String(d.doses) }),
          el("td", { text: String(d.months) }),
          el("td", { class: "records", text: recs })));
      }
      table.append(tbody);
      box.append(table);
    }
    if (t.not_used.length) {
      const ul = el("ul", { class: "not-used" });
      for (const n of t.not_used) ul.append(el("li", { text: n.resource + ": " + n.reason }));
      box.append(el("p", { class: "hint", text: "Medication records not used:" }), ul);
    }
  }

  // ---- T-score chart (inline SVG) ----------------------------------------------------------
  const COLORS = ["#0b5cad", "#d1495b", "#2e933c", "#8e44ad", "#e67e22", "#16a2b8", "#6d4c41"];

  function fmt(v) { return (v < 0 ? "\u2212" + Math.abs(v).toFixed(1) : v.toFixed(1)); }

  function drawChart(points) {
    const box = $("chart");
    box.replaceChildren();
    if (!points.length) {
      box.append(el("p", { class: "chart-empty", text: "No T-scores in this record." }));
      return;
    }
    const series = new Map();
    for (const p of points) {
      const key = p.site_label + (p.laterality ? " (" + p.laterality + ")" : "");
      if (!series.has(key)) series.set(key, []);
      series.get(key).push({ t: Date.parse(p.date + "T00:00:00Z"), date: p.date, value: Number(p.value) });
    }
    for (const s of series.values()) s.sort((a, b) => a.t - b.t);

    const W = 760, H = 300, L = 56, R = 200, T = 16, B = 46;
    const pw = W - L - R, ph = H - T - B;
    const ts = points.map((p) => Date.parse(p.date + "T00:00:00Z"));
    const vs = points.map((p) => Number(p.value));
    let tMin = Math.min(...ts), tMax = Math.max(...ts);
    if (tMin === tMax) { tMin -= 182 * 864e5; tMax += 182 * 864e5; }
    const pad = (tMax - tMin) * 0.08;
    tMin -= pad; tMax += pad;
    const vMax = Math.max(1, Math.ceil(Math.max(...vs) + 0.2));
    const vMin = Math.min(-4, Math.floor(Math.min(...vs) - 0.2));
    const x = (t) => L + ((t - tMin) / (tMax - tMin)) * pw;
    const y = (v) => T + ((vMax - v) / (vMax - vMin)) * ph;

    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
      "aria-label": "T-scores over time by site", class: "tscore-chart" });
    root.append(svg("title", {}, "T-scores over time by site"));
    // WHO bands
    root.append(svg("rect", { x: L, y: y(-2.5), width: pw, height: y(vMin) - y(-2.5), fill: "#fdecea" }));
    root.append(svg("rect", { x: L, y: y(-1), width: pw, height: y(-2.5) - y(-1), fill: "#fff6e0" }));
    for (let v = vMin; v <= vMax; v++) {
      root.append(svg("line", { x1: L, x2: L + pw, y1: y(v), y2: y(v), stroke: "#e3e7ec" }));
      root.append(svg("text", { x: L - 8, y: y(v) + 4, "text-anchor": "end", "font-size": 11, fill: "#5f6b7a" }, fmt(v)));
    }
    for (const [v, label, colour] of [[-1, "−1.0 low bone mass", "#b7791f"], [-2.5, "−2.5 osteoporosis", "#c62828"]]) {
      root.append(svg("line", { x1: L, x2: L + pw, y1: y(v), y2: y(v), stroke: colour, "stroke-dasharray": "5 4" }));
      root.append(svg("text", { x: L + pw - 4, y: y(v) - 4, "text-anchor": "end", "font-size": 10, fill: colour }, label));
    }
    // axes
    root.append(svg("line", { x1: L, x2: L, y1: T, y2: T + ph, stroke: "#5f6b7a" }));
    root.append(svg("line", { x1: L, x2: L + pw, y1: T + ph, y2: T + ph, stroke: "#5f6b7a" }));
    const dates = [...new Set(points.map((p) => p.date))].sort();
    const shown = dates.length <= 6 ? dates : [dates[0], dates[Math.floor(dates.length / 2)], dates[dates.length - 1]];
    for (const d of shown) {
      const xx = x(Date.parse(d + "T00:00:00Z"));
      root.append(svg("line", { x1: xx, x2: xx, y1: T + ph, y2: T + ph + 5, stroke: "#5f6b7a" }));
      root.append(svg("text", { x: xx, y: T + ph + 18, "text-anchor": "middle", "font-size": 11, fill: "#5f6b7a" }, d));
    }
    root.append(svg("text", { x: L + pw / 2, y: H - 6, "text-anchor": "middle", "font-size": 12, fill: "#1f2933" }, "Date of DXA exam"));
    root.append(svg("text", { x: 14, y: T + ph / 2, "text-anchor": "middle", "font-size": 12, fill: "#1f2933",
      transform: `rotate(-90 14 ${T + ph / 2})` }, "T-score"));
    // one polyline and its points per site, and the legend
    let i = 0;
    for (const [label, pts] of series) {
      const colour = COLORS[i % COLORS.length];
      const g = svg("g", { class: "series", "data-site": label });
      g.append(svg("polyline", { points: pts.map((p) => `${x(p.t).toFixed(1)},${y(p.value).toFixed(1)}`).join(" "),
        fill: "none", stroke: colour, "stroke-width": 2 }));
      for (const p of pts) {
        const c = svg("circle", { cx: x(p.t).toFixed(1), cy: y(p.value).toFixed(1), r: 4.5, fill: colour, stroke: "#fff", "stroke-width": 1.5 });
        c.append(svg("title", {}, `${label}: T ${fmt(p.value)} on ${p.date}`));
        g.append(c);
        g.append(svg("text", { x: (x(p.t) + 7).toFixed(1), y: (y(p.value) - 7).toFixed(1), "font-size": 11, fill: colour }, fmt(p.value)));
      }
      root.append(g);
      const ly = T + 10 + i * 20;
      const legend = svg("g", { class: "legend-item" });
      legend.append(svg("line", { x1: L + pw + 16, x2: L + pw + 36, y1: ly, y2: ly, stroke: colour, "stroke-width": 3 }));
      legend.append(svg("text", { x: L + pw + 42, y: ly + 4, "font-size": 12, fill: "#1f2933" }, label));
      root.append(legend);
      i++;
    }
    box.append(root);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("run-bundle").addEventListener("click", runPasted);
    loadSamples().catch((e) => status("Cannot load the example patients: " + e, true));
  });
})();
