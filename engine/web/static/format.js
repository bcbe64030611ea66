// arena live page: number formatting (prices by each symbol's tick, quantities by its step),
// the trader colours, and small DOM helpers. Shared by chart.js and app.js through window.ArenaFormat.
"use strict";

(function () {
  // Twelve clearly distinct colours (hue-spread, readable on the dark and the light theme).
  const PALETTE = ["#f58518", "#4c9be8", "#e45756", "#54a24b", "#eeca3b", "#b279a2",
                   "#ff9da6", "#2bb7b0", "#9d755d", "#a0a0a0", "#9be15d", "#d43bd1"];

  const symbols = new Map();      // symbol -> {tick_size, step_size}
  const colors = new Map();

  const nf2 = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const nf0 = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const missing = (v) => v === null || v === undefined || (typeof v === "number" && !isFinite(v));

  // Decimals a tick or step size needs: 0.1 -> 1, 0.0001 -> 4, 0.5 -> 1, 1 -> 0.
  function decimalsOf(size) {
    if (!size || size >= 1) return 0;
    const text = String(size).toLowerCase();
    if (text.includes("e-")) return Number(text.split("e-")[1]);
    return (text.split(".")[1] || "").replace(/0+$/, "").length;
  }

  function fixed(v, decimals) {
    return new Intl.NumberFormat("en-US", { minimumFractionDigits: decimals, maximumFractionDigits: decimals }).format(v);
  }

  // A number without a known tick: enough significant digits to tell small prices apart.
  function num(v) {
    if (missing(v)) return "–";
    if (typeof v !== "number") return String(v);
    const a = Math.abs(v);
    if (a >= 1000) return nf2.format(v);
    if (a < 1e-12) return "0";
    if (a >= 1) return String(Number(v.toFixed(4)));
    return String(Number(v.toPrecision(4)));
  }

  const F = {
    PALETTE,
    setSymbols(map) { for (const [s, f] of Object.entries(map || {})) symbols.set(s, f); },
    price(symbol, v) {
      if (missing(v)) return "–";
      const f = symbols.get(symbol);
      return f && f.tick_size ? fixed(v, decimalsOf(f.tick_size)) : num(v);
    },
    qty(symbol, v) {
      if (missing(v)) return "–";
      const f = symbols.get(symbol);
      return f && f.step_size ? fixed(v, decimalsOf(f.step_size)) : num(v);
    },
    // A liquidation price of 0 or none (1x longs, no margin call possible) shows as a dash.
    liq(symbol, v) { return missing(v) || v <= 0 ? "–" : F.price(symbol, v); },
    money(v) { return missing(v) ? "–" : nf2.format(v); },
    usd0(v) { return missing(v) ? "–" : "$" + nf0.format(v); },
    pct(v) { return missing(v) ? "–" : (v > 0 ? "+" : "") + nf2.format(v) + "%"; },
    signed(v) { return missing(v) ? "–" : (v > 0 ? "+" : "") + nf2.format(v); },
    num,
    nf0,
    decimalsOf,
    age(v) { return missing(v) ? "never" : v < 10 ? `${v.toFixed(1)}s` : `${Math.round(v)}s`; },
    hms(ts) { return missing(ts) ? "–" : new Date(ts * 1000).toISOString().slice(11, 19); },
    dayTime(ts) { return new Date(ts * 1000).toISOString().slice(5, 16).replace("T", " "); },
    signClass(v) { return typeof v === "number" ? (v > 0 ? "pos" : v < 0 ? "neg" : "") : ""; },
    // Confidence intervals, when the leaderboard carries them: [lo, hi] or {lo, hi}/{low, high}.
    interval(ci, fmt) {
      if (!ci) return "";
      const lo = Array.isArray(ci) ? ci[0] : ci.lo ?? ci.low ?? ci.lower;
      const hi = Array.isArray(ci) ? ci[1] : ci.hi ?? ci.high ?? ci.upper;
      if (missing(lo) || missing(hi)) return "";
      return `[${fmt(lo)}, ${fmt(hi)}]`;
    },
    // Colours follow the configured order of the traders, so they never depend on arrival.
    assignColors(names) { for (const n of names) F.color(n); },
    color(trader) {
      if (!colors.has(trader)) colors.set(trader, PALETTE[colors.size % PALETTE.length]);
      return colors.get(trader);
    },
    el(tag, cls, text) {
      const e = document.createElement(tag);
      if (cls) e.className = cls;
      if (text !== undefined && text !== null) e.textContent = String(text);
      return e;
    },
    traderTag(name, onOpen) {
      const t = F.el(onOpen ? "button" : "span", "trader", name);
      if (onOpen) { t.type = "button"; t.title = `open ${name}'s view`; t.addEventListener("click", () => onOpen(name)); }
      t.style.setProperty("--c", F.color(name));
      return t;
    },
  };
  window.ArenaFormat = F;
})();
