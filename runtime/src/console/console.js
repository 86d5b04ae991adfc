// Collector console: the Metrics screen's live charts. Every 2 s it reads
// the node's totals (/console/metrics.json) and plots, per interval, the
// request rate, the error rate, and the p50/p99 latency estimated from the
// histogram buckets (as Prometheus's histogram_quantile does).
"use strict";
(function () {
  const charts = document.getElementById("charts");
  if (!charts) return;
  const source = charts.dataset.source;
  const keep = 150; // five minutes of points
  const points = { rate: [], errors: [], p50: [], p99: [] };
  let last = null;

  // The q-quantile of the calls in `delta` (cumulative [bound_s, count] pairs), in ms.
  function quantile(q, delta) {
    const total = delta.length ? delta[delta.length - 1][1] : 0;
    if (total <= 0) return 0;
    const rank = q * total;
    let prevBound = 0, prevCount = 0;
    for (const [bound, count] of delta) {
      if (count >= rank) {
        const inBucket = count - prevCount;
        const frac = inBucket > 0 ? (rank - prevCount) / inBucket : 0;
        return 1000 * (prevBound + (bound - prevBound) * frac);
      }
      prevBound = bound; prevCount = count;
    }
    return 1000 * prevBound;
  }

  function draw(id, series) {
    const svg = document.getElementById(id);
    const w = 600, h = 160, pad = 8;
    const max = Math.max(1e-9, ...series.flatMap((s) => s.values));
    const ns = "http://www.w3.org/2000/svg";
    svg.textContent = "";
    for (const s of series) {
      const line = document.createElementNS(ns, "polyline");
      const n = s.values.length;
      // The line fills the width as points come, up to `keep` of them.
      line.setAttribute("points", s.values.map((v, i) =>
        `${(w * i) / Math.max(9, n - 1)},${h - pad - ((h - 2 * pad) * v) / max}`).join(" "));
      line.setAttribute("stroke", s.color);
      svg.appendChild(line);
    }
    document.getElementById(`${id}-legend`).textContent = series.map((s) => {
      const n = s.values.length;
      return `${s.name} ${n ? s.values[n - 1].toFixed(2) : "–"}`;
    }).join(" · ") + ` (top of the chart: ${max.toFixed(2)})`;
  }

  async function sample() {
    try {
      const r = await fetch(source, { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
      const now = await r.json();
      if (last) {
        const dt = Math.max(0.001, (now.at_ms - last.at_ms) / 1000);
        const delta = now.buckets.map(([b, c], i) => [b, c - ((last.buckets[i] || [b, 0])[1])]);
        const push = (k, v) => { points[k].push(v); if (points[k].length > keep) points[k].shift(); };
        push("rate", (now.requests - last.requests) / dt);
        push("errors", (now.errors - last.errors) / dt);
        push("p50", quantile(0.5, delta));
        push("p99", quantile(0.99, delta));
        draw("rate", [{ name: "calls/s", color: "#2457c5", values: points.rate }]);
        draw("errors", [{ name: "errors/s", color: "#b3261e", values: points.errors }]);
        draw("latency", [
          { name: "p50 ms", color: "#1b7f3b", values: points.p50 },
          { name: "p99 ms", color: "#c77700", values: points.p99 },
        ]);
      }
      last = now;
      document.getElementById("sampled").textContent =
        `${now.requests} calls, ${now.errors} failed, since the node started; last sample ${new Date(now.at_ms).toLocaleTimeString()}`;
    } catch (e) {
      document.getElementById("sampled").textContent = `could not read the metrics: ${e.message}`;
    }
  }
  sample();
  setInterval(sample, 2000);
})();
