// arena live page: equity curves, leaderboard, open positions and decisions, updated from the
// server-sent event stream at /events. Plain JS, no build step, no network beyond this server.
"use strict";

(function () {
  const PALETTE = ["#f5a524", "#4cc9f0", "#f72585", "#80ed99", "#b388ff", "#ff8fa3",
                   "#ffd166", "#06d6a0", "#118ab2", "#ef476f"];
  const MAX_POINTS = 20000;       // per trader, oldest dropped first
  const MAX_DECISIONS = 60;
  const STATUS_EVERY_MS = 3000;

  const state = {
    series: new Map(),            // trader -> {ts: number[], eq: number[]}
    colors: new Map(),
    hidden: new Set(),
    rows: [],                     // leaderboard rows
    positions: new Map(),         // trader -> [position dicts]
    decisions: [],                // newest first
    seenDecisions: new Set(),
    lastEvent: null,
    events: 0,
  };
  window.arena = state;           // for debugging and the browser test

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };

  // ---------------------------------------------------------------- formatting

  const nf2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const nf0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const nfp = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
  const money = (v) => (v === null || v === undefined || isNaN(v) ? "–" : nf2.format(v));
  const pct = (v) => (v === null || v === undefined || isNaN(v) ? "–" : (v > 0 ? "+" : "") + nf2.format(v) + "%");
  const num = (v) => {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    const a = Math.abs(v);
    if (a >= 1000) return nf2.format(v);
    if (a >= 1) return v.toFixed(2).replace(/\.00$/, "");
    if (a < 1e-9) return "0";
    return a >= 0.01 ? v.toFixed(2) : String(Number(v.toPrecision(3)));
  };
  const age = (v) => (v === null || v === undefined ? "never" : v < 10 ? `${v.toFixed(1)}s` : `${Math.round(v)}s`);
  const hhmm = (ts) => {
    if (!ts && ts !== 0) return "–";
    const d = new Date(ts * 1000);
    return d.toISOString().slice(11, 19);
  };
  const dayTime = (ts) => new Date(ts * 1000).toISOString().slice(5, 16).replace("T", " ");
  const signClass = (v) => (typeof v === "number" ? (v > 0 ? "pos" : v < 0 ? "neg" : "") : "");

  function colorOf(trader) {
    if (!state.colors.has(trader)) state.colors.set(trader, PALETTE[state.colors.size % PALETTE.length]);
    return state.colors.get(trader);
  }

  function traderTag(name) {
    const t = el("span", "trader", name);
    t.style.setProperty("--c", colorOf(name));
    return t;
  }

  // ---------------------------------------------------------------- equity chart

  let chart = null;
  let chartOrder = [];

  // Events can arrive by the thousand (a fast replay): mark what changed, render once per frame.
  const dirty = new Set();
  let framePending = false;
  function schedule(...parts) {
    for (const p of parts) dirty.add(p);
    if (framePending) return;
    framePending = true;
    requestAnimationFrame(() => {
      framePending = false;
      const now = new Set(dirty);
      dirty.clear();
      if (now.has("chart")) redrawChart();
      if (now.has("leaderboard")) renderLeaderboard();
      if (now.has("chart") || now.has("leaderboard")) renderLegend();
      if (now.has("positions")) renderPositions();
      if (now.has("decisions")) renderDecisions();
    });
  }

  function addPoint(trader, ts, eq) {
    if (typeof ts !== "number" || typeof eq !== "number" || !isFinite(eq)) return;
    let s = state.series.get(trader);
    if (!s) { s = { ts: [], eq: [] }; state.series.set(trader, s); colorOf(trader); }
    const n = s.ts.length;
    if (n === 0 || ts > s.ts[n - 1]) { s.ts.push(ts); s.eq.push(eq); }
    else if (ts === s.ts[n - 1]) { s.eq[n - 1] = eq; }
    else {  // out of order (history arriving after live points): insert in place
      let i = n - 1;
      while (i >= 0 && s.ts[i] > ts) i--;
      if (i >= 0 && s.ts[i] === ts) s.eq[i] = eq;
      else { s.ts.splice(i + 1, 0, ts); s.eq.splice(i + 1, 0, eq); }
    }
    if (s.ts.length > MAX_POINTS) { s.ts.splice(0, s.ts.length - MAX_POINTS); s.eq.splice(0, s.eq.length - MAX_POINTS); }
    schedule("chart");
  }

  function alignedData(order) {
    const all = new Set();
    for (const name of order) for (const t of state.series.get(name).ts) all.add(t);
    const xs = Array.from(all).sort((a, b) => a - b);
    const index = new Map(xs.map((t, i) => [t, i]));
    const data = [xs];
    for (const name of order) {
      const s = state.series.get(name);
      const ys = new Array(xs.length).fill(null);
      for (let i = 0; i < s.ts.length; i++) ys[index.get(s.ts[i])] = s.eq[i];
      data.push(ys);
    }
    return data;
  }

  function chartSize() {
    const box = $("equity-chart");
    return { width: Math.max(320, box.clientWidth), height: Math.max(260, Math.round(window.innerHeight * 0.42)) };
  }

  function makeChart(order) {
    const axis = { stroke: "#8b95a7", grid: { stroke: "#222938", width: 1 }, ticks: { stroke: "#2b3344", width: 1 } };
    const opts = {
      ...chartSize(),
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { size: 6 } },
      scales: { x: { time: true } },
      axes: [
        { ...axis, values: (u, splits) => {
          const step = splits.length > 1 ? splits[1] - splits[0] : 0;
          const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
          return splits.map((ts) => (step >= 86400 ? dayTime(ts).slice(0, 5) : span >= 86400 ? dayTime(ts) : hhmm(ts).slice(0, 5)));
        } },
        { ...axis, size: 72, values: (u, vals) => vals.map((v) => nf0.format(v)) },
      ],
      series: [{}].concat(order.map((name) => ({
        label: name, stroke: colorOf(name), width: 2, spanGaps: true,
        show: !state.hidden.has(name), points: { show: false },
      }))),
    };
    const box = $("equity-chart");
    box.textContent = "";
    return new uPlot(opts, alignedData(order), box);
  }

  function redrawChart() {
    const order = Array.from(state.series.keys()).filter((n) => state.series.get(n).ts.length);
    if (!order.length) return;
    if (!chart || order.join("\u0000") !== chartOrder.join("\u0000")) {
      if (chart) chart.destroy();
      chartOrder = order;
      chart = makeChart(order);
    } else {
      chart.setData(alignedData(order));
    }
    const box = $("equity-chart");
    let points = 0, last = 0;
    for (const s of state.series.values()) { points += s.ts.length; last = Math.max(last, s.ts[s.ts.length - 1] || 0); }
    box.dataset.points = String(points);
    box.dataset.series = String(order.length);
    box.dataset.lastTs = String(last);
  }

  function renderLegend() {
    const legend = $("legend");
    legend.textContent = "";
    // Returns against starting capital, as the leaderboard computes them (else the first point).
    const start = new Map();
    for (const r of state.rows) {
      if (!r.trader) continue;
      if (typeof r.starting_capital === "number") start.set(r.trader, r.starting_capital);
      else if (typeof r.equity === "number" && typeof r.return_pct === "number") start.set(r.trader, r.equity / (1 + r.return_pct / 100));
    }
    const items = Array.from(state.series.entries())
      .filter(([, s]) => s.eq.length)
      .sort((a, b) => b[1].eq[b[1].eq.length - 1] - a[1].eq[a[1].eq.length - 1]);
    for (const [name, s] of items) {
      const last = s.eq[s.eq.length - 1];
      const base = start.get(name) ?? s.eq[0];
      const ret = base ? (last / base - 1) * 100 : 0;
      const item = el("button", "legend-item" + (state.hidden.has(name) ? " off" : ""));
      item.type = "button";
      item.dataset.trader = name;
      item.style.setProperty("--c", colorOf(name));
      item.append(el("span", "swatch"), el("span", "name", name), el("span", "value", money(last)),
                  el("span", "ret " + signClass(ret), pct(ret)));
      item.addEventListener("click", () => {
        if (state.hidden.has(name)) state.hidden.delete(name); else state.hidden.add(name);
        if (chart) chart.setSeries(chartOrder.indexOf(name) + 1, { show: !state.hidden.has(name) });
        renderLegend();
      });
      legend.append(item);
    }
  }

  window.addEventListener("resize", () => { if (chart) chart.setSize(chartSize()); });

  // ---------------------------------------------------------------- tables

  const LEADER_COLS = [
    ["rank", "#"], ["trader", "Trader"], ["equity", "Equity"], ["return_pct", "Return"],
    ["net_return_pct", "Net of LLM"], ["realized_pnl", "Realized"], ["unrealized_pnl", "Unrealized"],
    ["max_drawdown_pct", "Max DD"], ["sharpe", "Sharpe"], ["trades", "Trades"],
    ["win_rate", "Win %"], ["open_positions", "Open"], ["fees", "Fees"], ["funding", "Funding"],
    ["invalid_rate", "Invalid %"], ["hold_rate", "Hold %"], ["llm_cost", "LLM $"],
    ["llm_cost_usd", "LLM $"], ["liquidations", "Liq."], ["status", "Status"],
  ];
  const POSITION_COLS = [
    ["trader", "Trader"], ["symbol", "Symbol"], ["side", "Side"], ["qty", "Qty"],
    ["entry_price", "Entry"], ["mark", "Mark"], ["leverage", "Lev"], ["margin", "Margin"],
    ["unrealized_pnl", "uPnL"], ["roe_pct", "ROE"], ["stop_loss", "SL"], ["take_profit", "TP"],
    ["liquidation_price", "Liq"], ["open_reason", "Why"], ["reason", "Why"],
  ];

  // Only the known columns, in this order (rows carry more keys than a table can show).
  function columnsFor(rows, preferred) {
    const present = new Set();
    for (const r of rows) for (const [k, v] of Object.entries(r)) if (v === null || typeof v !== "object") present.add(k);
    const cols = [], labels = new Set();
    for (const [k, label] of preferred) {
      if (present.has(k) && !labels.has(label)) { cols.push([k, label]); labels.add(label); }
    }
    return cols;
  }

  function cell(key, value) {
    const td = el("td");
    if (key === "trader") { td.append(traderTag(value)); return td; }
    if (key === "side") { td.append(el("span", "side " + value, value)); return td; }
    if (key === "reason" || key === "open_reason") { td.className = "reason"; td.textContent = value ?? ""; td.title = value ?? ""; return td; }
    if (typeof value === "number") {
      td.className = "num";
      if (/_rate$/.test(key)) td.textContent = num(value);
      else if (/drawdown/.test(key)) td.textContent = `${nf2.format(value)}%`;
      else if (/_pct$/.test(key)) td.textContent = pct(value);
      else if (key === "llm_cost" || key === "llm_cost_usd") td.textContent = value < 10 ? value.toFixed(3) : money(value);
      else if (/(price|^mark$|stop_loss|take_profit)/.test(key)) td.textContent = Math.abs(value) >= 1 ? nfp.format(value) : num(value);
      else if (/(equity|pnl|fees|usd|cash|margin)/.test(key)) td.textContent = money(value);
      else td.textContent = num(value);
      const sign = /(pnl|return_pct|roe_pct|^funding$)/.test(key) ? signClass(value) : "";
      if (sign) td.classList.add(sign);
      return td;
    }
    td.textContent = value === null || value === undefined ? "–" : String(value);
    return td;
  }

  function renderTable(table, rows, preferred, emptyText) {
    const head = table.tHead, body = table.tBodies[0];
    const cols = columnsFor(rows, preferred);
    head.textContent = ""; body.textContent = "";
    const tr = el("tr");
    for (const [, label] of cols) tr.append(el("th", null, label));
    head.append(tr);
    if (!rows.length) {
      const empty = el("tr", "empty"); const td = el("td", null, emptyText);
      td.colSpan = Math.max(1, cols.length); empty.append(td); body.append(empty);
      return;
    }
    for (const row of rows) {
      const r = el("tr");
      if (row.trader) r.dataset.trader = row.trader;
      for (const [key] of cols) r.append(cell(key, row[key]));
      body.append(r);
    }
  }

  function setLeaderboard(rows) {
    state.rows = (rows || []).map((r, i) => ({ rank: i + 1, ...r, trader: r.trader ?? r.name }));
    schedule("leaderboard");
  }

  function renderLeaderboard() {
    renderTable($("leaderboard"), state.rows, LEADER_COLS, "waiting for the first cycle");
  }

  function setPositions(trader, positions) {
    state.positions.set(trader, (positions || []).map((p) => ({ trader, ...p })));
    schedule("positions");
  }

  function renderPositions() {
    const rows = [];
    for (const list of state.positions.values()) rows.push(...list);
    rows.sort((a, b) => (a.trader > b.trader ? 1 : -1) || (a.symbol > b.symbol ? 1 : -1));
    renderTable($("positions"), rows, POSITION_COLS, "no open positions");
    $("positions-count").textContent = rows.length ? `(${rows.length})` : "";
  }

  // ---------------------------------------------------------------- decisions

  function addDecision(d) {
    const key = d.id || `${d.trader}|${d.cycle_id}|${d.ts}`;
    if (state.seenDecisions.has(key)) return;
    state.seenDecisions.add(key);
    if (state.seenDecisions.size > 5000) state.seenDecisions = new Set(state.decisions.map((x) => x.id).filter(Boolean));
    state.decisions.push(d);
    state.decisions.sort((a, b) => (b.ts || 0) - (a.ts || 0));
    state.decisions.length = Math.min(state.decisions.length, MAX_DECISIONS);
    schedule("decisions");
  }

  function actionsOf(d) {
    const dec = d.decision || d;
    const acts = Array.isArray(dec.actions) ? dec.actions : [];
    const moves = acts.filter((a) => a.action && a.action !== "hold");
    if (moves.length) return moves;
    const why = dec.reason || (acts.find((a) => a.reason) || {}).reason || "";
    return [{ action: "hold", reason: why }];
  }

  function renderDecisions() {
    const list = $("decisions");
    list.textContent = "";
    if (!state.decisions.length) { list.append(el("li", "empty", "no decisions yet")); return; }
    for (const d of state.decisions) {
      for (const a of actionsOf(d)) {
        const li = el("li", "decision" + (d.valid === false ? " invalid" : ""));
        li.dataset.trader = d.trader || "";
        const meta = el("div", "meta");
        meta.append(el("span", "time", hhmm(d.ts)), traderTag(d.trader || "?"),
                    el("span", "action " + (a.action || "hold"), (a.action || "hold").replace("_", " ")));
        if (a.symbol) meta.append(el("span", "symbol", a.symbol));
        const bits = [];
        if (a.size_usdt) bits.push(`$${nf0.format(a.size_usdt)}`);
        if (a.leverage) bits.push(`${a.leverage}x`);
        if (a.stop_loss) bits.push(`SL ${num(a.stop_loss)}`);
        if (a.take_profit) bits.push(`TP ${num(a.take_profit)}`);
        if (typeof a.confidence === "number") bits.push(`conf ${Math.round(a.confidence * 100)}%`);
        if (bits.length) meta.append(el("span", "details", bits.join(" · ")));
        if (d.model) meta.append(el("span", "model", d.model));
        li.append(meta);
        const why = d.valid === false ? `invalid answer: ${d.error || "unknown error"}` : (a.reason || "");
        li.append(el("div", "why", why));
        list.append(li);
      }
    }
  }

  // ---------------------------------------------------------------- status

  function badge(id, text, cls) {
    const b = $(id);
    b.textContent = text;
    b.className = "badge " + (cls || "");
  }

  function renderStatus(st) {
    badge("engine-badge", `engine ${st.state || "?"}`, st.state === "running" ? "ok" : "warn");
    $("paused-badge").hidden = !st.paused;
    document.body.classList.toggle("paused", !!st.paused);
    const feed = st.feed || {};
    const ages = st.price_age_s || feed.price_age_s || feed.price_age || {};
    const stale = new Set([...(st.stale || []), ...(feed.stale || [])]);
    const connected = feed.connected;
    badge("feed-badge", connected === false ? "feed disconnected" : stale.size ? `feed: ${stale.size} stale` : "feed live",
          connected === false ? "bad" : stale.size ? "warn" : "ok");
    const prices = $("prices");
    prices.textContent = "";
    for (const [sym, secs] of Object.entries(ages)) {
      const bad = stale.has(sym) || secs === null;
      const chip = el("span", "price-chip " + (bad ? "stale" : "fresh"));
      chip.dataset.symbol = sym;
      chip.append(el("span", "sym", sym), el("span", "age", age(secs)));
      prices.append(chip);
    }
    $("updated").textContent = `status at ${new Date().toISOString().slice(11, 19)} UTC`;
  }

  // The control token, asked for once when the API answers 401; kept for this tab only. It also
  // goes in a same-site cookie so the event stream (which cannot send headers) may read.
  function askToken() {
    const token = window.prompt("Control token (ARENA_CONTROL_TOKEN):");
    if (!token) return false;
    sessionStorage.setItem("arena-token", token);
    document.cookie = `arena_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
    return true;
  }

  function authHeaders() {
    const token = sessionStorage.getItem("arena-token");
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function getJSON(path) {
    const get = () => fetch(path, { cache: "no-store", headers: authHeaders() });
    let r = await get();
    if (r.status === 401 && askToken()) r = await get();
    if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
    return r.json();
  }

  async function pollStatus() {
    try {
      renderStatus(await getJSON("/status"));
      const nx = await getJSON("/next-run");
      const left = nx.seconds_until_next_run;
      badge("next-badge", left === null || left === undefined ? "no next run" : `next cycle in ${Math.round(left)}s`, "muted");
    } catch (e) {
      badge("engine-badge", "engine unreachable", "bad");
    }
  }

  // ---------------------------------------------------------------- loading and the stream

  async function loadAll() {
    const [equity, board] = await Promise.all([getJSON("/equity"), getJSON("/leaderboard")]);
    for (const [name, points] of Object.entries(equity.traders || {})) for (const [ts, eq] of points) addPoint(name, ts, eq);
    setLeaderboard(board.rows || []);
    const names = new Set([...state.rows.map((r) => r.trader), ...Object.keys(equity.traders || {})]);
    await Promise.all(Array.from(names).filter(Boolean).map(async (name) => {
      try {
        const t = await getJSON(`/traders/${encodeURIComponent(name)}`);
        setPositions(name, t.positions || []);
        for (const d of t.decisions || []) addDecision({ trader: name, ...d });
      } catch (e) { /* a trader that vanished between calls */ }
    }));
    schedule("chart", "leaderboard", "positions", "decisions");
    requestAnimationFrame(() => requestAnimationFrame(() => { document.body.dataset.ready = "1"; }));
  }

  const handlers = {
    AccountSnapshot(e) { addPoint(e.trader, e.ts, e.equity); setPositions(e.trader, e.positions); },
    Leaderboard(e) { setLeaderboard(e.rows); },
    DecisionMade(e) { addDecision(e); },
    CycleFinished(e) {
      badge("cycle-badge", `cycle ${e.status} at ${hhmm(e.finished_at)}` + (e.skip_reason ? ` (${e.skip_reason})` : ""),
            e.status === "ok" ? "ok" : e.status === "failed" ? "bad" : "warn");
    },
    FeedStatus(e) { badge("feed-badge", `feed ${e.state}`, e.state === "disconnected" ? "bad" : "ok"); },
    OrderFilled(e) { toast(`${e.trader} ${e.side} ${num(e.qty)} ${e.symbol} @ ${num(e.price)} (${e.reason})`); },
    PositionClosed(e) { toast(`${e.trader} closed ${e.side} ${e.symbol}: ${money(e.realized_pnl)} (${e.reason})`); },
  };

  async function connect() {
    await getJSON("/status").catch(() => {});  // asks for the token first when reads need it
    const source = new EventSource("/events");
    let first = true;
    source.onopen = () => {
      badge("stream-badge", "live", "ok");
      // Load state after the stream is open so nothing published in between is missed;
      // reload after a reconnect to fill the gap.
      loadAll().catch((e) => toast(`load failed: ${e.message}`));
      first = false;
    };
    source.onerror = () => { badge("stream-badge", first ? "connecting…" : "reconnecting…", "warn"); };
    source.onmessage = (msg) => {
      let e;
      try { e = JSON.parse(msg.data); } catch (err) { return; }
      state.events += 1;
      state.lastEvent = e.type;
      const h = handlers[e.type];
      if (h) h(e);
    };
  }

  // ---------------------------------------------------------------- controls

  let toastTimer = null;
  function toast(text) {
    const t = $("toast");
    t.textContent = text;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { t.hidden = true; }, 4000);
  }

  async function command(path) {
    // JSON content type: the API refuses POSTs without it (an HTML form cannot send it).
    const send = () => fetch(path, {
      method: "POST", body: "{}", headers: { "Content-Type": "application/json", ...authHeaders() },
    });
    let r = await send();
    if (r.status === 401) {
      if (!askToken()) return;
      r = await send();
    }
    const body = await r.json().catch(() => ({}));
    toast(r.ok ? `${path.slice(1)}: ok` : `${path.slice(1)}: ${body.message || r.status}`);
    pollStatus();
  }

  $("btn-trigger").addEventListener("click", () => command("/trigger"));
  $("btn-pause").addEventListener("click", () => command("/pause"));
  $("btn-resume").addEventListener("click", () => command("/resume"));

  connect();
  pollStatus();
  setInterval(pollStatus, STATUS_EVERY_MS);
})();
