// arena live page: the equity chart (uPlot) in dollars or in % return, with each line's value
// written at its end and time labels that never repeat. Used by app.js as window.ArenaChart.
"use strict";

(function () {
  const F = window.ArenaFormat;
  const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

  class EquityChart {
    // state: {series: Map(trader -> {ts: [], eq: []}), hidden: Set, base: Map(trader -> capital)}
    constructor(box, state) {
      this.box = box;
      this.state = state;
      this.u = null;
      this.order = [];
      this.mode = "usd";
      this.key = "";
      this.labels = [];         // the end-of-line labels last drawn: [{trader, text}]
      this.xLabels = [];        // the x-axis labels last drawn
      this.yLabels = [];        // the y-axis labels last drawn
    }

    setMode(mode) { this.mode = mode; this.key = ""; this.redraw(this.order); }

    size() {
      const narrow = window.innerWidth < 600;
      return { width: Math.max(300, this.box.clientWidth),
               height: Math.max(narrow ? 220 : 260, Math.round(window.innerHeight * (narrow ? 0.32 : 0.42))) };
    }

    resize() { if (this.u) this.u.setSize(this.size()); }

    value(name, eq) {
      if (this.mode !== "pct") return eq;
      const s = this.state.series.get(name);
      const base = this.state.base.get(name) ?? (s && s.eq.length ? s.eq[0] : null);
      return base ? (eq / base - 1) * 100 : null;
    }

    data(order) {
      const all = new Set();
      for (const name of order) for (const t of this.state.series.get(name).ts) all.add(t);
      const xs = Array.from(all).sort((a, b) => a - b);
      // uPlot spans a lone x value over years without asking xRange: a second, empty instant
      // a second later lets xRange keep the axis to the minutes around it.
      if (xs.length === 1) xs.push(xs[0] + 1);
      const index = new Map(xs.map((t, i) => [t, i]));
      const data = [xs];
      for (const name of order) {
        const s = this.state.series.get(name);
        const ys = new Array(xs.length).fill(null);
        for (let i = 0; i < s.ts.length; i++) ys[index.get(s.ts[i])] = this.value(name, s.eq[i]);
        data.push(ys);
      }
      return data;
    }

    // Before the data spans anything (one point, or a flat curve), keep the axes to what is
    // there: a few minutes around a single instant, a sliver around a single value.
    static xRange(u, min, max) {
      if (min === null || max === null) return [0, 1];
      const mid = (min + max) / 2;
      return max - min < 300 ? [mid - 150, mid + 150] : [min, max];
    }

    yRange(u, min, max) {
      if (min === null || max === null) return this.mode === "pct" ? [-1, 1] : [0, 1];
      const span = max - min;
      const floor = this.mode === "pct" ? 0.05 : Math.max(1, Math.abs(max) * 0.0005);
      const pad = Math.max(span * 0.08, span === 0 ? floor : 0);
      return [min - pad, max + pad];
    }

    // One number of decimals for a whole axis: as many as its step needs (0.25 -> 2, 5 -> 0).
    static decimals(step) {
      for (let d = 0; d < 4; d++) {
        const scaled = step * 10 ** d;
        if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
      }
      return 4;
    }

    yValues(vals) {
      const step = vals.length > 1 ? Math.abs(vals[1] - vals[0]) : 1;
      const d = EquityChart.decimals(step);
      const fmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
      this.yLabels = vals.map((v) => {
        const text = fmt.format(Math.abs(v) < step / 1e6 ? 0 : v);  // no "-0" at zero
        return this.mode === "pct" ? `${text}%` : text;
      });
      return this.yLabels;
    }

    xValues(splits) {
      const step = splits.length > 1 ? splits[1] - splits[0] : 0;
      const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
      const fmt = step >= 86400 ? (ts) => F.dayTime(ts).slice(0, 5)
        : span >= 86400 ? F.dayTime
        : step > 0 && step < 60 ? F.hms
        : (ts) => F.hms(ts).slice(0, 5);
      let previous = null;
      // A label equal to the one before it (ticks closer than the format) is left blank.
      this.xLabels = splits.map((ts) => { const s = fmt(ts); if (s === previous) return ""; previous = s; return s; });
      return this.xLabels;
    }

    drawEndLabels(u) {
      const dpr = window.devicePixelRatio || 1;
      const items = [];
      for (let i = 1; i < u.series.length; i++) {
        if (!u.series[i].show) continue;
        const ys = u.data[i];
        let j = ys.length - 1;
        while (j >= 0 && (ys[j] === null || ys[j] === undefined)) j--;
        if (j < 0) continue;
        items.push({ trader: u.series[i].label, v: ys[j], y: u.valToPos(ys[j], "y", true) });
      }
      items.sort((a, b) => a.y - b.y);
      const gap = 13 * dpr;   // labels never overlap: pushed apart, in value order
      for (let k = 1; k < items.length; k++) if (items[k].y - items[k - 1].y < gap) items[k].y = items[k - 1].y + gap;
      const ctx = u.ctx;
      ctx.save();
      ctx.font = `600 ${11 * dpr}px system-ui, sans-serif`;
      ctx.textBaseline = "middle";
      ctx.textAlign = "left";
      const x = u.bbox.left + u.bbox.width + 6 * dpr;
      this.labels = [];
      for (const it of items) {
        const text = this.mode === "pct" ? F.pct(it.v) : F.usd0(it.v);
        ctx.fillStyle = F.color(it.trader);
        ctx.fillText(text, x, it.y);
        this.labels.push({ trader: it.trader, text });
      }
      ctx.restore();
    }

    make(order) {
      const axis = { stroke: css("--muted"), grid: { stroke: css("--grid"), width: 1 },
                     ticks: { stroke: css("--grid"), width: 1 } };
      const pct = this.mode === "pct";
      const opts = {
        ...this.size(),
        padding: [12, 78, 0, 4],
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        legend: { show: false },
        cursor: { drag: { x: true, y: false }, points: { size: 6 } },
        scales: { x: { time: true, range: EquityChart.xRange },
                  y: { range: (u, min, max) => this.yRange(u, min, max) } },
        axes: [
          { ...axis, values: (u, splits) => this.xValues(splits) },
          { ...axis, size: pct ? 64 : 76, values: (u, vals) => this.yValues(vals) },
        ],
        series: [{}].concat(order.map((name) => ({
          label: name, stroke: F.color(name), width: 2, spanGaps: true,
          show: !this.state.hidden.has(name), points: { show: false },
        }))),
        hooks: { draw: [(u) => this.drawEndLabels(u)] },
      };
      this.box.textContent = "";
      return new uPlot(opts, this.data(order), this.box);
    }

    // order: the traders to draw, in legend order.
    redraw(order) {
      order = order.filter((n) => this.state.series.has(n) && this.state.series.get(n).ts.length);
      if (!order.length) {
        if (!this.u && !this.box.querySelector(".chart-empty")) {
          this.box.textContent = "";
          this.box.append(F.el("p", "chart-empty", "no equity points yet: the first come with the first account snapshot"));
        }
        return;
      }
      // The colours are part of the key: a new trader or a theme change redraws with them.
      const key = [this.mode, F.theme(), order.join("\u0000"), order.map((n) => F.color(n)).join()].join("\u0001");
      if (!this.u || key !== this.key) {
        if (this.u) this.u.destroy();
        this.key = key;
        this.order = order;
        this.u = this.make(order);
      } else {
        this.u.setData(this.data(order));
      }
      let points = 0, last = 0;
      for (const s of this.state.series.values()) { points += s.ts.length; last = Math.max(last, s.ts[s.ts.length - 1] || 0); }
      this.box.dataset.points = String(points);
      this.box.dataset.series = String(order.length);
      this.box.dataset.lastTs = String(last);
      this.box.dataset.mode = this.mode;
    }

    show(name, visible) {
      const i = this.order.indexOf(name);
      if (this.u && i >= 0) this.u.setSeries(i + 1, { show: visible });
    }
  }

  window.ArenaChart = EquityChart;
})();
