// The admin's Traffic page: fetch the counts as JSON and draw them with uPlot,
// again every few seconds (the sampling interval, or the chart's step if longer).
(function () {
  "use strict";
  const root = document.getElementById("traffic");
  const select = document.getElementById("window");
  const status = document.getElementById("traffic-status");
  const interval = Math.max(parseFloat(root.dataset.interval) || 5, 1);
  const COLOURS = ["#417690", "#e07b00", "#7b1fa2", "#2e7d32", "#c62828", "#00838f", "#6d4c41"];
  let charts = [];
  let shape = "";
  let timer = null;

  const CHARTS = [
    {key: "rps", title: "Requests per second", pool: [["rps", "pool"]], backends: "rps"},
    {key: "errors", title: "Errors (% of requests)",
     pool: [["share_4xx", "4xx"], ["share_5xx", "5xx"]], backends: "share_5xx", suffix: " 5xx"},
    {key: "latency", title: "Upstream latency (ms)",
     pool: [["p50", "p50"], ["p95", "p95"]], backends: "p95", suffix: " p95"},
    {key: "in_flight", title: "In flight", pool: [["in_flight", "pool"]], backends: "in_flight"},
    {key: "up", title: "Up (1) or down (0)", pool: [], backends: "up"},
  ];

  function seriesOf(pool, spec) {
    const lines = spec.pool.map(([name, label]) => ({label, values: pool.series[name]}));
    pool.backends.forEach((backend) => lines.push({
      label: backend.url + (spec.suffix || ""), values: backend.series[spec.backends],
    }));
    return lines;
  }

  function element(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([name, value]) => node.setAttribute(name, value));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function latest(values) {
    for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
    return null;
  }

  function show(value, unit) {
    return value === null || value === undefined ? "-" : `${value}${unit || ""}`;
  }

  function summary(pool) {
    const table = element("table", {class: "traffic-summary"});
    const head = table.insertRow();
    ["", "req/s", "4xx", "5xx", "p50", "p95", "in flight", "state"].forEach((name) =>
      head.appendChild(element("th", {scope: "col"}, name)));
    const rows = [{name: `pool ${pool.name}`, series: pool.series, pool: true}].concat(
      pool.backends.map((backend) => ({name: backend.url, series: backend.series})));
    rows.forEach((row) => {
      const tr = table.insertRow();
      const s = row.series;
      tr.appendChild(element("th", {scope: "row"}, row.name));
      [show(latest(s.rps)), show(latest(s.share_4xx), " %"), show(latest(s.share_5xx), " %"),
       show(latest(s.p50), " ms"), show(latest(s.p95), " ms"), show(latest(s.in_flight))]
        .forEach((text) => tr.insertCell().textContent = text);
      const state = tr.insertCell();
      if (!row.pool) {
        const up = latest(s.up) !== 0;
        state.textContent = up ? "up" : "down";
        state.className = up ? "up" : "down";
      }
    });
    return table;
  }

  function build(data) {
    charts.forEach((chart) => chart.destroy());
    charts = [];
    root.replaceChildren();
    const width = Math.max(Math.min(root.clientWidth / 2 - 30, 620), 320);
    data.pools.forEach((pool) => {
      const section = element("div", {class: "module pool", id: `pool-${pool.name}`});
      const heading = element("h2", {}, "Pool ");
      heading.appendChild(pool.url ? element("a", {href: pool.url}, pool.name) : document.createTextNode(pool.name));
      section.appendChild(heading);
      const rules = element("p", {class: "rules"}, pool.rules.length ? "Rules: " : "No rule uses it.");
      pool.rules.forEach((rule, index) => {
        if (index) rules.appendChild(document.createTextNode(", "));
        rules.appendChild(element("a", {href: rule.url}, rule.label));
      });
      section.appendChild(rules);
      const row = element("div", {class: "charts"});
      section.appendChild(row);
      CHARTS.forEach((spec) => {
        const lines = seriesOf(pool, spec);
        if (!lines.length) return;
        const box = element("div", {class: `chart chart-${spec.key}`});
        box.appendChild(element("h3", {}, spec.title));
        row.appendChild(box);
        const options = {
          width, height: 170,
          series: [{}].concat(lines.map((line, index) => ({
            label: line.label, stroke: COLOURS[index % COLOURS.length], width: 1.5,
            // Shares and latencies have no value where nothing was asked: join across.
            spanGaps: spec.key === "errors" || spec.key === "latency",
            points: {show: spec.key === "errors" || spec.key === "latency", size: 4},
          }))),
          scales: {y: {range: spec.key === "up" ? [0, 1.1] : (u, min, max) => [0, Math.max(max, 1)]}},
          legend: {show: true},
        };
        const chart = new uPlot(options, [data.times].concat(lines.map((l) => l.values)), box);
        chart.spec = spec;
        chart.pool = pool.name;
        charts.push(chart);
      });
      section.appendChild(summary(pool));
      root.appendChild(section);
    });
  }

  function update(data) {
    const newShape = JSON.stringify(data.pools.map((p) => [p.name, p.backends.map((b) => b.url), p.rules]));
    if (newShape !== shape) {
      shape = newShape;
      build(data);
    } else {
      charts.forEach((chart) => {
        const pool = data.pools.find((p) => p.name === chart.pool);
        chart.setData([data.times].concat(seriesOf(pool, chart.spec).map((l) => l.values)));
      });
      data.pools.forEach((pool) => {
        const section = document.getElementById(`pool-${pool.name}`);
        section.querySelector(".traffic-summary").replaceWith(summary(pool));
      });
    }
    root.dataset.drawn = String(data.times[data.times.length - 1]);
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  async function refresh() {
    clearTimeout(timer);
    let step = interval;
    try {
      const response = await fetch(`${root.dataset.url}?window=${select.value}`,
                                   {headers: {Accept: "application/json"}});
      if (!response.ok) throw new Error(await response.text());
      const data = await response.json();
      step = Math.max(interval, Math.min(data.step, 60));
      update(data);
    } catch (error) {
      status.textContent = `could not update: ${error.message}`;
    }
    timer = setTimeout(refresh, step * 1000);
  }

  select.addEventListener("change", () => { shape = ""; refresh(); });
  refresh();
})();
