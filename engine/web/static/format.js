// arena live page: number formatting (prices by each symbol's tick, quantities by its step),
// the trader colours, and small DOM helpers. Shared by chart.js and app.js through window.ArenaFormat.
"use strict";

(function () {
  // Trader colours, as engine/palette.py computes them for the reports: a name's 32-bit FNV-1a
  // hash (UTF-8) picks a slot of the palette served at /palette (slots run round the hue circle);
  // names are placed in sorted order, and one whose slot is taken or next to a taken one moves on
  // STRIDE slots at a time to the first with no taken neighbour, else the first free one.
  // Colours depend on the set of names only, never on the order they arrive in.
  const palette = { dark: [], light: [], stride: 1 };
  const FALLBACK = "#8b95a7";     // before /palette has answered
  const names = new Set();        // every trader the page knows of
  let slots = new Map();          // name -> palette slot
  const lightTheme = window.matchMedia("(prefers-color-scheme: light)");

  function nameHash(name) {
    let h = 0x811c9dc5;
    for (const byte of new TextEncoder().encode(name)) h = Math.imul(h ^ byte, 0x01000193) >>> 0;
    return h >>> 0;
  }

  // Code-point order, as Python's sorted() compares str.
  function byCodePoint(a, b) {
    const x = Array.from(a, (c) => c.codePointAt(0)), y = Array.from(b, (c) => c.codePointAt(0));
    for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
    return x.length - y.length;
  }

  function assignSlots() {
    const size = palette.dark.length;
    const taken = new Set();
    slots = new Map();
    if (!size) return;
    const mod = (n) => ((n % size) + size) % size;
    for (const name of Array.from(names).sort(byCodePoint)) {
      const start = nameHash(name) % size;
      const tour = Array.from({ length: size }, (_, k) => mod(start + palette.stride * k));
      const free = tour.filter((s) => !taken.has(s));
      const apart = free.filter((s) => !taken.has(mod(s - 1)) && !taken.has(mod(s + 1)));
      const slot = apart.length ? apart[0] : free.length ? free[0] : start;
      taken.add(slot);
      slots.set(name, slot);
    }
  }

  const symbols = new Map();      // symbol -> {tick_size, step_size}

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

  // "-0.00" reads as a loss where there is none: a value that rounds to zero has no sign.
  function signedText(v, text) {
    const zero = /^-?0(\.0+)?$/.test(text.replace(/,/g, "").replace(/^-/, ""));
    if (zero) return text.replace(/^-/, "");
    return (v > 0 ? "+" : "") + text;
  }

  const F = {
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
    pct(v) { return missing(v) ? "–" : signedText(v, nf2.format(v)) + "%"; },
    signed(v) { return missing(v) ? "–" : signedText(v, nf2.format(v)); },
    // A return in %, computed and rounded as the leaderboard's rows are (3 decimals).
    returnPct(equity, capital) {
      if (missing(equity) || !capital) return null;
      return Math.round((equity - capital) / capital * 100 * 1000) / 1000;
    },
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
    setPalette(p) {
      palette.dark = (p && p.dark) || [];
      palette.light = (p && p.light) || [];
      palette.stride = (p && p.stride) || 1;
      assignSlots();
    },
    // Make these names known (a new one may move a colliding name on: callers redraw).
    addNames(list) {
      let added = false;
      for (const n of list) if (n && !names.has(n)) { names.add(n); added = true; }
      if (added) assignSlots();
      return added;
    },
    theme() { return lightTheme.matches ? "light" : "dark"; },
    onThemeChange(fn) { lightTheme.addEventListener("change", fn); },
    // A trader's colour in a theme (default: the current one). A name not made known (a
    // disabled trader, which draws no curve) takes its hash's slot without moving others.
    color(trader, theme) {
      const list = palette[theme || F.theme()];
      if (!list.length) return FALLBACK;
      return list[slots.has(trader) ? slots.get(trader) : nameHash(trader) % list.length];
    },
    // The CSS custom properties that colour a trader's name in either theme (style.css).
    paint(node, trader) {
      node.style.setProperty("--cd", F.color(trader, "dark"));
      node.style.setProperty("--cl", F.color(trader, "light"));
    },
    nameHash,
    el(tag, cls, text) {
      const e = document.createElement(tag);
      if (cls) e.className = cls;
      if (text !== undefined && text !== null) e.textContent = String(text);
      return e;
    },
    traderTag(name, onOpen) {
      const t = F.el(onOpen ? "button" : "span", "trader", name);
      if (onOpen) { t.type = "button"; t.title = `open ${name}'s view`; t.addEventListener("click", () => onOpen(name)); }
      F.paint(t, name);
      return t;
    },
  };
  window.ArenaFormat = F;
})();
