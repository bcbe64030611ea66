// arena live page: equity curves, leaderboard, positions, decisions and a per-trader view,
// updated from the server-sent event stream at /events. Plain JS, no build step, no inline
// script or style (it runs under CSP default-src 'self'), no network beyond this server.
"use strict";

(function () {
  const F = window.ArenaFormat;
  const { el } = F;
  const MAX_POINTS = 20000;       // per trader, oldest dropped first
  const MAX_DECISIONS = 200;
  const STATUS_EVERY_MS = 3000;
  const TOAST_MS = 4000;

  const state = {
    series: new Map(),            // trader -> {ts: number[], eq: number[]}
    hidden: new Set(),
    base: new Map(),              // trader -> starting capital (for % returns)
    capital: new Map(),           // trader -> the capital /traders gives (exact)
    mode: "live",                 // the arena's mode: live, replay or backtest
    traders: new Map(),           // configured traders: name -> {status, detail, model, provider, strategy}
    rows: [],                     // leaderboard rows, best first
    positions: new Map(),         // trader -> [position dicts]
    decisions: [],                // newest first
    seenDecisions: new Set(),
    filter: { trader: "", hideHolds: false },
    selected: null,               // the trader whose view is open
    view: null,                   // its last /traders/{name} answer
    lastEvent: null,
    events: 0,
  };
  window.arena = state;           // for debugging and the browser tests

  const $ = (id) => document.getElementById(id);
  const chart = new window.ArenaChart($("equity-chart"), state);
  state.chart = chart;

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
      if (now.has("chart")) chart.redraw(colorOrder());
      if (now.has("leaderboard")) renderLeaderboard();
      if (now.has("chart") || now.has("leaderboard")) renderLegend();
      if (now.has("positions")) renderPositions();
      if (now.has("decisions")) renderDecisions();
      if (now.has("view")) renderView();
    });
  }

  // Configured order first (stable colours and chart series), then anything else seen.
  function colorOrder() {
    const names = [...state.traders.keys(), ...state.series.keys()];
    return Array.from(new Set(names));
  }

  // ---------------------------------------------------------------- equity

  function addPoint(trader, ts, eq) {
    if (typeof ts !== "number" || typeof eq !== "number" || !isFinite(eq)) return;
    let s = state.series.get(trader);
    if (!s) {
      s = { ts: [], eq: [] };
      state.series.set(trader, s);
      if (F.addNames([trader])) schedule("leaderboard", "positions", "decisions");
    }
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

  function setMode(mode) {
    for (const [id, m] of [["mode-usd", "usd"], ["mode-pct", "pct"]]) {
      $(id).classList.toggle("on", m === mode);
      $(id).setAttribute("aria-pressed", String(m === mode));
    }
    chart.setMode(mode);
    renderLegend();
  }
  $("mode-usd").addEventListener("click", () => setMode("usd"));
  $("mode-pct").addEventListener("click", () => setMode("pct"));

  // The legend follows the leaderboard's order; a click hides or shows the trader's line.
  function renderLegend() {
    const legend = $("legend");
    legend.textContent = "";
    const rank = new Map(state.rows.map((r, i) => [r.trader, i]));
    const items = Array.from(state.series.entries()).filter(([, s]) => s.eq.length)
      .sort((a, b) => (rank.get(a[0]) ?? 1e9) - (rank.get(b[0]) ?? 1e9)
        || b[1].eq[b[1].eq.length - 1] - a[1].eq[a[1].eq.length - 1]);
    for (const [name, s] of items) {
      const last = s.eq[s.eq.length - 1];
      // The return as the leaderboard computes and rounds it, so the two never disagree.
      const ret = F.returnPct(last, state.base.get(name) ?? s.eq[0]);
      const item = el("button", "legend-item" + (state.hidden.has(name) ? " off" : ""));
      item.type = "button";
      item.dataset.trader = name;
      item.title = state.hidden.has(name) ? "show this line" : "hide this line";
      F.paint(item, name);
      item.append(el("span", "swatch"), el("span", "name", name), el("span", "value", F.money(last)),
                  el("span", "ret " + F.signClass(ret), F.pct(ret)));
      item.addEventListener("click", () => {
        if (state.hidden.has(name)) state.hidden.delete(name); else state.hidden.add(name);
        chart.show(name, !state.hidden.has(name));
        renderLegend();
      });
      legend.append(item);
    }
    $("legend-box").querySelector("summary").textContent = `Traders (${items.length})`;
  }

  window.addEventListener("resize", () => chart.resize());
  F.onThemeChange(() => schedule("chart", "leaderboard", "positions", "decisions"));

  // ---------------------------------------------------------------- tables

  const LEADER_COLS = [
    ["rank", "#"], ["trader", "Trader"], ["equity", "Equity"], ["return_pct", "Return"],
    ["net_return_pct", "Net of LLM"], ["realized_pnl", "Realized"], ["unrealized_pnl", "Unrealized"],
    ["max_drawdown_pct", "Max DD"], ["sharpe", "Sharpe"], ["trades", "Trades"],
    ["win_rate", "Win %"], ["open_positions", "Open"], ["fees", "Fees"], ["funding", "Funding"],
    ["invalid_rate", "Invalid %"], ["coverage", "Coverage"], ["p_beats_random", "P(beats random)"],
    ["hold_rate", "Hold %"], ["llm_cost", "LLM $"],
    ["liquidations", "Liq."], ["status", "Status"],
  ];
  const POSITION_COLS = [
    ["trader", "Trader"], ["symbol", "Symbol"], ["side", "Side"], ["qty", "Qty"],
    ["entry_price", "Entry"], ["mark", "Mark"], ["leverage", "Lev"], ["margin", "Margin"],
    ["unrealized_pnl", "uPnL"], ["roe_pct", "ROE"], ["stop_loss", "SL"], ["take_profit", "TP"],
    ["liquidation_price", "Liq"], ["open_reason", "Why"],
  ];
  const TRADE_COLS = [
    ["ts", "Closed"], ["symbol", "Symbol"], ["side", "Side"], ["qty", "Qty"], ["entry_price", "Entry"],
    ["exit_price", "Exit"], ["realized_pnl", "PnL"], ["fees", "Fees"], ["reason", "Why closed"],
  ];
  const REFUSAL_COLS = [["ts", "Time"], ["symbol", "Symbol"], ["action", "Action"], ["rule", "Rule"], ["detail", "Detail"]];
  const ALWAYS = new Set(["trader", "rank", "status"]);

  // Only the known columns, in this order (rows carry more keys than a table can show).
  function columnsFor(rows, preferred) {
    const present = new Set(ALWAYS);
    for (const r of rows) for (const [k, v] of Object.entries(r)) if (v === null || typeof v !== "object") present.add(k);
    return preferred.filter(([k]) => present.has(k) && (rows.length === 0 || rows.some((r) => k in r)));
  }

  function cell(key, value, row) {
    const td = el("td");
    const symbol = row.symbol;
    if (key === "trader") { td.className = "pin"; td.append(F.traderTag(value, openTrader)); return td; }
    if (key === "side") { td.append(el("span", "side " + value, value)); return td; }
    if (key === "reason" || key === "open_reason" || key === "detail") { td.className = "reason"; td.textContent = value ?? ""; td.title = value ?? ""; return td; }
    if (key === "status") {
      // Wraps rather than runs off the table; the whole text is in the tooltip too.
      const detail = row.status_detail ? `${value}: ${row.status_detail}` : value;
      td.className = "status-cell";
      td.title = detail ?? "";
      td.append(el("span", "status " + (value || ""), detail ?? "–"));
      return td;
    }
    if (key === "ts") { td.className = "num"; td.textContent = F.hms(value); return td; }
    if (typeof value !== "number") { td.textContent = value === null || value === undefined ? "–" : String(value); return td; }
    td.className = "num";
    let text;
    if (key === "qty") text = F.qty(symbol, value);
    else if (key === "liquidation_price") text = F.liq(symbol, value);
    else if (/(price|^mark$|stop_loss|take_profit)/.test(key)) text = F.price(symbol, value);
    else if (key === "sharpe") text = value.toFixed(2);
    else if (key === "coverage") text = `${(value * 100).toFixed(0)}%`;
    else if (key === "p_beats_random") text = value.toFixed(2);
    else if (/_rate$/.test(key)) text = F.num(value);
    else if (/drawdown/.test(key)) text = `${F.money(value)}%`;
    else if (/_pct$/.test(key)) text = F.pct(value);
    else if (key === "llm_cost") text = value < 10 ? value.toFixed(3) : F.money(value);
    else if (key === "leverage") text = `${value}x`;
    else if (/(equity|pnl|fees|usd|cash|margin|funding)/.test(key)) text = /pnl|funding/.test(key) ? F.signed(value) : F.money(value);
    else text = F.num(value);
    td.textContent = text;
    const ci = key === "return_pct" ? row.return_ci : key === "sharpe" ? row.sharpe_ci : null;
    if (ci) td.append(el("span", "ci", " " + F.interval(ci, key === "sharpe" ? (v) => v.toFixed(2) : (v) => F.pct(v))));
    const sign = /(pnl|return_pct|roe_pct|^funding$)/.test(key) ? F.signClass(value) : "";
    if (sign) td.classList.add(sign);
    return td;
  }

  function renderTable(table, rows, preferred, emptyText) {
    const head = table.tHead, body = table.tBodies[0];
    const cols = columnsFor(rows, preferred);
    head.textContent = ""; body.textContent = "";
    const tr = el("tr");
    // A header may wrap between words, never before its unit ("Win %", "LLM $").
    for (const [key, label] of cols) {
      const numeric = key !== "rank" && rows.some((r) => typeof r[key] === "number");
      tr.append(el("th", key === "trader" ? "pin" : numeric ? "num" : null, label.replace(/ (%|\$|DD)$/, "\u00a0$1")));
    }
    head.append(tr);
    if (!rows.length) {
      const empty = el("tr", "empty"); const td = el("td", null, emptyText);
      td.colSpan = Math.max(1, cols.length); empty.append(td); body.append(empty);
      return;
    }
    for (const row of rows) {
      const r = el("tr");
      if (row.trader) r.dataset.trader = row.trader;
      if (row.status === "disabled") r.className = "disabled";
      for (const [key] of cols) r.append(cell(key, row[key], row));
      body.append(r);
    }
  }

  function setLeaderboard(rows) {
    state.rows = (rows || []).map((r, i) => ({ rank: i + 1, ...r, trader: r.trader ?? r.name }));
    if (F.addNames(state.rows.map((r) => r.trader))) schedule("positions", "decisions");
    for (const r of state.rows) {
      if (state.capital.has(r.trader)) state.base.set(r.trader, state.capital.get(r.trader));
      else if (typeof r.starting_capital === "number") state.base.set(r.trader, r.starting_capital);
      else if (typeof r.equity === "number" && typeof r.return_pct === "number" && r.return_pct > -100) {
        state.base.set(r.trader, r.equity / (1 + r.return_pct / 100));
      }
    }
    schedule("leaderboard", "chart");
  }

  function renderLeaderboard() {
    // Configured traders that do not trade (no API key) are listed under the ranked ones.
    const ranked = new Set(state.rows.map((r) => r.trader));
    const rows = state.rows.map((r) => {
      const t = state.traders.get(r.trader);
      return t && t.status !== "active" && r.status === "active" ? { ...r, status: t.status, status_detail: t.detail } : r;
    });
    for (const [name, t] of state.traders) {
      if (!ranked.has(name) && t.status === "disabled") rows.push({ trader: name, status: "disabled", status_detail: t.detail });
    }
    renderTable($("leaderboard"), rows, LEADER_COLS, "waiting for the first cycle");
  }

  function setPositions(trader, positions) {
    state.positions.set(trader, (positions || []).map((p) => ({ trader, ...p })));
    schedule("positions");
  }

  function renderPositions() {
    const rows = [];
    for (const list of state.positions.values()) rows.push(...list);
    rows.sort((a, b) => (a.trader > b.trader ? 1 : a.trader < b.trader ? -1 : a.symbol > b.symbol ? 1 : -1));
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
    updateTraderFilter(d.trader);
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

  // A baseline's "model" is its own name: shown once, never twice.
  function modelOf(d) {
    const t = state.traders.get(d.trader) || {};
    const model = d.model || t.model;
    if (!model || model === d.trader || d.provider === "rule" || (t.strategy && t.strategy !== "llm")) return null;
    return model;
  }

  function decisionItems(list, decisions, opts) {
    list.textContent = "";
    let shown = 0;
    for (const d of decisions) {
      for (const a of actionsOf(d)) {
        const hold = (a.action || "hold") === "hold" && d.valid !== false;
        if (opts.hideHolds && hold) continue;
        const li = el("li", "decision" + (d.valid === false ? " invalid" : "") + (hold ? " hold" : ""));
        li.dataset.trader = d.trader || "";
        li.dataset.action = a.action || "hold";
        const meta = el("div", "meta");
        meta.append(el("span", "time", F.hms(d.ts)));
        if (opts.showTrader) meta.append(F.traderTag(d.trader || "?", openTrader));
        meta.append(el("span", "action " + (a.action || "hold"), (a.action || "hold").replace("_", " ")));
        if (a.symbol) meta.append(el("span", "symbol", a.symbol));
        const bits = [];
        if (a.size_usdt) bits.push(`$${F.nf0.format(a.size_usdt)}`);
        if (a.leverage) bits.push(`${a.leverage}x`);
        if (a.stop_loss) bits.push(`SL ${F.price(a.symbol, a.stop_loss)}`);
        if (a.take_profit) bits.push(`TP ${F.price(a.symbol, a.take_profit)}`);
        if (typeof a.confidence === "number") bits.push(`conf ${Math.round(a.confidence * 100)}%`);
        if (bits.length) meta.append(el("span", "details", bits.join(" · ")));
        const model = modelOf(d);
        if (model) meta.append(el("span", "model", model));
        li.append(meta);
        const why = d.valid === false ? `invalid answer: ${d.error || "unknown error"}` : (a.reason || "");
        li.append(el("div", "why", why));
        list.append(li);
        shown += 1;
      }
    }
    if (!shown) list.append(el("li", "empty", opts.empty));
  }

  function renderDecisions() {
    const f = state.filter;
    const chosen = state.decisions.filter((d) => !f.trader || d.trader === f.trader);
    decisionItems($("decisions"), chosen, { showTrader: true, hideHolds: f.hideHolds,
      empty: f.hideHolds ? "no trades among the latest decisions" : "no decisions yet" });
  }

  function updateTraderFilter(name) {
    const select = $("decision-trader");
    if (!name || Array.from(select.options).some((o) => o.value === name)) return;
    select.append(new Option(name, name));
  }
  $("decision-trader").addEventListener("change", (e) => { state.filter.trader = e.target.value; schedule("decisions"); });
  $("hide-holds").addEventListener("change", (e) => { state.filter.hideHolds = e.target.checked; schedule("decisions"); });

  // ---------------------------------------------------------------- the per-trader view

  function openTrader(name) {
    if (location.hash !== `#trader=${encodeURIComponent(name)}`) location.hash = `trader=${encodeURIComponent(name)}`;
    else showTrader(name);
  }

  async function showTrader(name) {
    state.selected = name;
    $("trader-view").hidden = false;
    $("tv-title").textContent = name;
    await reloadView();
    $("trader-view").scrollIntoView({ block: "start" });
  }

  function closeTrader() {
    state.selected = null;
    state.view = null;
    $("trader-view").hidden = true;
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  }

  let viewTimer = null;
  function reloadViewSoon(trader) {
    if (trader !== state.selected || viewTimer) return;
    viewTimer = setTimeout(() => { viewTimer = null; reloadView(); }, 500);
  }

  async function reloadView() {
    const name = state.selected;
    if (!name) return;
    try {
      const r = await fetch(`/traders/${encodeURIComponent(name)}`, { cache: "no-store", headers: authHeaders() });
      const body = await r.json();
      if (name !== state.selected) return;
      state.view = r.ok ? body : { name, status: "unknown", message: body.message || `HTTP ${r.status}` };
    } catch (e) {
      state.view = { name, status: "unknown", message: e.message };
    }
    schedule("view");
  }

  function renderView() {
    const v = state.view;
    if (!v || !state.selected) return;
    const box = $("tv-summary");
    box.textContent = "";
    const t = state.traders.get(v.name) || {};
    const status = v.detail ? `${v.status}: ${v.detail}` : (v.status || t.status || "");
    box.append(F.traderTag(v.name), el("span", "status " + (v.status || ""), status));
    const model = t.strategy === "llm" ? t.model : t.strategy;
    if (model) box.append(el("span", "muted", model));
    const acc = v.account || {};
    for (const [label, key, fmt] of [["equity", "equity", F.money], ["return", "return_pct", F.pct],
      ["realized", "realized_pnl", F.signed], ["unrealized", "unrealized_pnl", F.signed], ["fees", "fees", F.money],
      ["trades", "trades", F.num], ["wins", "wins", F.num]]) {
      if (acc[key] === undefined) continue;
      const s = el("span", "kv");
      const signed = /return|realized/.test(label);
      s.append(el("span", "muted", label + " "), el("b", signed ? F.signClass(acc[key]) : "", fmt(acc[key])));
      box.append(s);
    }
    if (!v.account && v.message) box.append(el("span", "muted", v.message));
    renderTable($("tv-positions"), v.positions || [], POSITION_COLS.filter(([k]) => k !== "trader"), "no open positions");
    renderTable($("tv-trades"), v.trades || [], TRADE_COLS, "no completed trades yet");
    const reasoning = (v.reasoning && v.reasoning.length ? v.reasoning : [...(v.decisions || [])].reverse())
      .map((d) => ({ trader: v.name, ...d }));
    decisionItems($("tv-decisions"), reasoning, { showTrader: false, hideHolds: false, empty: "no decisions yet" });
    renderTable($("tv-refusals"), v.refusals || [], REFUSAL_COLS, "no refusals");
  }

  $("tv-close").addEventListener("click", closeTrader);
  function route() {
    const m = /^#trader=(.+)$/.exec(location.hash);
    if (m) showTrader(decodeURIComponent(m[1])); else if (state.selected) closeTrader();
  }
  window.addEventListener("hashchange", route);

  // ---------------------------------------------------------------- status

  function badge(id, text, cls) {
    const b = $(id);
    b.textContent = text;
    b.className = "badge " + (cls || "");
  }

  function cycleBadge(status, at, detail) {
    badge("cycle-badge", `cycle ${status} at ${F.hms(at)}` + (detail ? ` (${detail})` : ""),
          status === "ok" ? "ok" : status === "failed" || status === "timeout" ? "bad" : "warn");
  }

  // A replay or backtest says so, with how far it has got and the simulated time.
  function renderMode(st) {
    const mode = (st.arena && st.arena.mode) || (st.replay ? "replay" : "live");
    state.mode = mode;
    const b = $("mode-badge");
    if (mode === "live") { b.hidden = true; return; }
    const p = st.replay || {};
    const done = typeof p.percent === "number" ? ` ${p.finished ? 100 : Math.floor(p.percent)}%` : "";
    const at = p.sim_time ? ` · at ${p.sim_time.slice(0, 16).replace("T", " ")} UTC` : "";
    b.textContent = `${mode}${done}${at}`;
    b.title = `${mode}: frames replayed and the simulated time it has reached` +
      (typeof p.speed_x === "number" ? `, ${F.nf0.format(p.speed_x)}x real time` : "");
    b.className = "badge mode";
    b.hidden = false;
  }

  function renderStatus(st, cycleJob) {
    // A storage halt (the writer cannot record) outranks the state: `halted: storage (...)`.
    badge("engine-badge", st.halted || `engine ${st.state || "?"}`,
          st.halted ? "bad" : st.state === "running" ? "ok" : "warn");
    renderMode(st);
    $("paused-badge").hidden = !st.paused;
    document.body.classList.toggle("paused", !!st.paused);
    const feed = st.feed || {};
    const ages = st.price_age_s || feed.price_age_s || feed.price_age || {};
    const stale = new Set([...(st.stale || []), ...(feed.stale || [])]);
    const connected = feed.connected;
    badge("feed-badge", state.mode === "live" && connected === false ? "feed disconnected"
          : stale.size ? `feed: ${stale.size} stale` : state.mode === "live" ? "feed live" : `feed: ${state.mode}`,
          state.mode === "live" && connected === false ? "bad" : stale.size ? "warn" : "ok");
    // A page opened mid-run shows the last cycle the scheduler ran, not "no cycle yet".
    const jobs = Array.isArray(st.jobs) ? st.jobs : [];
    const job = jobs.find((j) => j.name === cycleJob) || jobs.find((j) => j.name === "trading_cycle");
    const cycleText = $("cycle-badge").textContent;
    if (job && job.last_start && (cycleText === "cycle …" || cycleText === "no cycle yet")) {
      const start = typeof job.last_start === "number" ? job.last_start : Date.parse(job.last_start) / 1000;
      cycleBadge(job.last_status || "ok", start + (job.last_duration || 0));
    } else if (cycleText === "cycle …") {
      badge("cycle-badge", "no cycle yet", "muted");
    }
    const prices = $("prices");
    prices.textContent = "";
    for (const [sym, secs] of Object.entries(ages)) {
      const bad = stale.has(sym) || secs === null;
      const chip = el("span", "price-chip " + (bad ? "stale" : "fresh"));
      chip.dataset.symbol = sym;
      chip.append(el("span", "sym", sym), el("span", "age", F.age(secs)));
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
      const nx = await getJSON("/next-run");
      renderStatus(await getJSON("/status"), nx.job);
      const left = nx.seconds_until_next_run;
      // /next-run counts on the engine's clock: simulated time in a replay or a backtest.
      const clock = state.mode === "live" ? "" : " simulated";
      badge("next-badge", left === null || left === undefined ? "no next cycle"
            : `next cycle in ${Math.round(left)}s${clock}`, "muted");
      $("next-badge").title = state.mode === "live" ? "wall-clock seconds" : "seconds of simulated time";
    } catch (e) {
      badge("engine-badge", "engine unreachable", "bad");
    }
  }

  // ---------------------------------------------------------------- loading and the stream

  async function loadAll() {
    const [symbols, traders, equity, board] = await Promise.all([
      getJSON("/symbols").catch(() => ({ symbols: {} })), getJSON("/traders").catch(() => ({ traders: [] })),
      getJSON("/equity"), getJSON("/leaderboard")]);
    F.setSymbols(symbols.symbols);
    for (const t of traders.traders || []) {
      state.traders.set(t.name, t);
      if (typeof t.starting_capital === "number") {
        state.capital.set(t.name, t.starting_capital);
        state.base.set(t.name, t.starting_capital);
      }
    }
    // The traders that trade set the colours (as in the report); a disabled one draws no curve.
    F.addNames([...state.traders.values()].filter((t) => t.status !== "disabled").map((t) => t.name));
    for (const [name, points] of Object.entries(equity.traders || {})) for (const [ts, eq] of points) addPoint(name, ts, eq);
    setLeaderboard(board.rows || []);
    const names = new Set([...state.rows.map((r) => r.trader), ...Object.keys(equity.traders || {})]);
    await Promise.all(Array.from(names).filter(Boolean).map(async (name) => {
      try {
        const t = await getJSON(`/traders/${encodeURIComponent(name)}`);
        setPositions(name, t.positions || []);
        const made = t.reasoning && t.reasoning.length ? t.reasoning : t.decisions || [];
        for (const d of made) addDecision({ trader: name, ...d });
      } catch (e) { /* a trader that vanished between calls */ }
    }));
    await pollStatus();
    schedule("chart", "leaderboard", "positions", "decisions");
    if (state.selected) reloadView();
    requestAnimationFrame(() => requestAnimationFrame(() => { document.body.dataset.ready = "1"; }));
  }

  const handlers = {
    AccountSnapshot(e) { addPoint(e.trader, e.ts, e.equity); setPositions(e.trader, e.positions); reloadViewSoon(e.trader); },
    Leaderboard(e) { setLeaderboard(e.rows); },
    DecisionMade(e) { addDecision(e); reloadViewSoon(e.trader); },
    DecisionRejected(e) { reloadViewSoon(e.trader); },
    CycleFinished(e) { cycleBadge(e.status, e.finished_at, e.skip_reason); },
    FeedStatus(e) {
      if (state.mode === "live") badge("feed-badge", `feed ${e.state}`, e.state === "disconnected" ? "bad" : "ok");
    },
    OrderFilled(e) { toast(`${e.trader} ${e.side} ${F.qty(e.symbol, e.qty)} ${e.symbol} @ ${F.price(e.symbol, e.price)} (${e.reason})`); },
    PositionClosed(e) {
      toast(`${e.trader} closed ${e.side} ${e.symbol}: ${F.signed(e.realized_pnl)} (${e.reason})`);
      reloadViewSoon(e.trader);
    },
  };

  async function connect() {
    await getJSON("/status").catch(() => {});  // asks for the token first when reads need it
    // The colours before anything is drawn, so no trader is ever drawn in a passing colour.
    F.setPalette(await getJSON("/palette").catch(() => null));
    const source = new EventSource("/events");
    let first = true;
    source.onopen = () => {
      badge("stream-badge", "stream connected", "ok");
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

  // ---------------------------------------------------------------- toasts and controls

  // Toasts sit in the header's own row: they push the page down, never cover it.
  function toast(text) {
    const box = $("toasts");
    const t = el("div", "toast", text);
    box.prepend(t);
    while (box.children.length > 2) box.lastChild.remove();
    setTimeout(() => t.remove(), TOAST_MS);
  }
  state.toast = toast;

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

  // On a phone the legend starts folded: the chart comes first.
  if (window.matchMedia("(max-width: 600px)").matches) $("legend-box").open = false;

  connect();
  setInterval(pollStatus, STATUS_EVERY_MS);
  route();
})();
