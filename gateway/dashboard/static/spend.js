/* The spend report: totals (and the batch work's share of them), the chart of every period
 * of the range stacked by model, and the per-model table. */

import { $, el, figureCells, fillTable, setFigure } from "./dom.js";
import { decimalsOf, integer, usd } from "./format.js";

const MAX_PERIODS = 744;  // bars in the chart at most: 31 days of hours
const COLOURS = ["#0b5cad", "#d4622b", "#2e8540", "#8a3ffc", "#b28600", "#007d79",
                 "#c2185b", "#5a6872"];

export class SpendView {
  constructor() {
    this.chart = null;
    this.models = new Set();  // every model seen, for the filter
    this.batch = [];  // each charted period's batch cost, for the tooltip
  }

  render(report, asked) {
    setFigure($("total-cost"), report.total_cost, usd(report.total_cost));
    setFigure($("total-requests"), report.requests, integer.format(report.requests));
    setFigure($("total-input"), report.total_input_tokens,
              integer.format(report.total_input_tokens));
    setFigure($("total-output"), report.total_output_tokens,
              integer.format(report.total_output_tokens));
    renderBatchShare(report.batch);
    renderModelTable(report.by_model);
    this.rememberModels(report.by_model.map((m) => m.model_key));
    this.renderChart(report, asked);
  }

  reset() {
    if (this.chart) { this.chart.destroy(); this.chart = null; }
    this.models = new Set();
    $("models").tBodies[0].replaceChildren();
  }

  rememberModels(models) {
    const select = $("f-model");
    let added = false;
    for (const model of models) {
      if (!this.models.has(model)) { this.models.add(model); added = true; }
    }
    if (!added) return;
    const chosen = select.value;
    const options = [el("option", { value: "" }, "All models")];
    for (const model of [...this.models].sort()) options.push(el("option", { value: model }, model));
    select.replaceChildren(...options);
    select.value = chosen;
  }

  renderChart(report, asked) {
    const { labels, total } = periods(report, asked);
    const byPeriod = new Map(report.timeseries.map((p) => [p.period, p]));
    const models = report.by_model.map((m) => m.model_key);
    const datasets = models.map((model, i) => ({
      label: model,
      backgroundColor: COLOURS[i % COLOURS.length],
      data: labels.map((period) => {
        const found = ((byPeriod.get(period) || {}).by_model || []).find(
          (m) => m.model_key === model);
        return found ? found.cost : 0;
      }),
    }));
    this.batch = labels.map((period) => (byPeriod.get(period) || {}).batch_cost || 0);
    captionChart(report.group_by, labels, total);
    if (typeof window.Chart !== "function") return;  // the table carries the same figures
    if (this.chart) {
      this.chart.data.labels = labels;
      this.chart.data.datasets = datasets;
      this.chart.update("none");
      return;
    }
    this.chart = new window.Chart($("chart"), chartConfig(labels, datasets,
                                                          (items) => this.batchFooter(items)));
  }

  // the hovered period's batch share, when it has one
  batchFooter(items) {
    const cost = items.length ? this.batch[items[0].dataIndex] || 0 : 0;
    return cost ? `Of which the Batch API: ${usd(cost)}` : "";
  }
}

/* "Of which the Batch API: $X in N batches", the batch work's share of the totals (already
 * counted in them; a batch is one request of the report); hidden for a report without it. */
function renderBatchShare(batch) {
  const line = $("batch-share");
  line.hidden = !batch;
  if (!batch) return;
  setFigure($("batch-cost"), batch.cost, usd(batch.cost));
  $("batch-detail").textContent = !batch.requests ? " (no batches in this range)."
    : ` in ${integer.format(batch.requests)} ${batch.requests === 1 ? "batch" : "batches"} ` +
      `(${integer.format(batch.input_tokens)} input and ` +
      `${integer.format(batch.output_tokens)} output tokens).`;
}

function renderModelTable(rows) {
  fillTable($("models"), rows, "No spend in this range.", (row, m) => {
    row.dataset.model = m.model_key;
    row.appendChild(el("th", { scope: "row" }, m.model_key));
    spendCells(row, m);
  });
}

/* A row's cost, requests and tokens, each with its exact value (the spend report's fields). */
export function spendCells(row, figures) {
  figureCells(row, [["cost", figures.cost, usd(figures.cost)],
                    ["requests", figures.requests, integer.format(figures.requests)],
                    ["input_tokens", figures.input_tokens, integer.format(figures.input_tokens)],
                    ["output_tokens", figures.output_tokens,
                     integer.format(figures.output_tokens)]]);
}

function captionChart(unit, labels, total) {
  const caption = $("chart-caption");
  caption.dataset.periods = String(total);
  caption.dataset.shown = String(labels.length);
  caption.textContent = !labels.length ? "No spend in this range."
    : `Cost per ${unit}, stacked by model, ${labels[0]} to ${labels[labels.length - 1]}` +
      (total > labels.length
        ? `: showing the last ${integer.format(labels.length)} of ${integer.format(total)} ` +
          `${unit}s (the chart's limit). The totals and the table cover the whole range; ` +
          "narrow the range or group by a longer period to chart the rest."
        : ".");
}

function chartConfig(labels, datasets, footer) {
  return {
    type: "bar",
    data: { labels, datasets },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false,
      scales: {
        x: { stacked: true },
        y: {
          stacked: true, beginAtZero: true, title: { display: true, text: "USD" },
          // every tick with the decimals the finest one needs: $0.00002, $0.00004, ...
          ticks: { callback: (value, index, ticks) =>
            usd(value, Math.max(...ticks.map((t) => decimalsOf(t.value)))) },
        },
      },
      plugins: {
        legend: { position: "bottom" },
        tooltip: { callbacks: {
          label: (ctx) => `${ctx.dataset.label}: ${usd(ctx.parsed.y)}`,
          footer,
        } },
      },
    },
  };
}

/* The chart's periods: every hour, day or month of the range, zero where nothing was spent.
 * The range is the one the report was asked for (from and to: whole UTC days); without
 * them, from the first period with spend to the current one. At most MAX_PERIODS bars:
 * past that, the latest ones, and the caption says so (the totals and the table still
 * cover the whole range). */
function periods(report, asked) {
  const group = report.group_by;
  const spent = report.timeseries.map((p) => p.period);
  const { from, to } = asked;
  const first = from ? truncate(group, parseDay(from))
    : spent.length ? parsePeriod(spent[0]) : null;
  if (first === null) return { labels: [], total: 0 };
  let last = to ? truncate(group, new Date(parseDay(to).getTime() + DAY_MS - HOUR_MS))
    : truncate(group, new Date());
  if (!to && spent.length) {
    const latest = parsePeriod(spent[spent.length - 1]);
    if (latest > last) last = latest;
  }
  if (first > last) return { labels: [], total: 0 };
  const total = between(group, first, last);
  const shown = Math.min(total, MAX_PERIODS);
  const labels = [];
  for (let i = shown - 1; i >= 0; i--) labels.push(periodLabel(group, shift(group, last, -i)));
  return { labels, total };
}

const HOUR_MS = 3600 * 1000, DAY_MS = 24 * HOUR_MS;
function utc(year, month, day, hour) {  // setUTCFullYear: Date.UTC reads 0-99 as 19xx
  const d = new Date(0);
  d.setUTCFullYear(year, month, day);
  d.setUTCHours(hour, 0, 0, 0);
  return d;
}
function parseDay(text) {
  const [y, m, d] = text.split("-").map(Number);
  return utc(y, m - 1, d, 0);
}
function parsePeriod(text) {  // "2026-05", "2026-05-01" or "2026-05-01T13:00:00Z"
  const [y, m, d] = text.slice(0, 10).split("-").map(Number);
  return utc(y, m - 1, d || 1, text.length > 10 ? Number(text.slice(11, 13)) : 0);
}
function truncate(group, d) {
  return utc(d.getUTCFullYear(), d.getUTCMonth(), group === "month" ? 1 : d.getUTCDate(),
             group === "hour" ? d.getUTCHours() : 0);
}
function shift(group, d, n) {
  if (group === "month") return utc(d.getUTCFullYear(), d.getUTCMonth() + n, 1, 0);
  return new Date(d.getTime() + n * (group === "hour" ? HOUR_MS : DAY_MS));
}
function between(group, a, b) {  // periods from a to b, both included
  if (group === "month") {
    return (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + b.getUTCMonth() - a.getUTCMonth() + 1;
  }
  return Math.round((b - a) / (group === "hour" ? HOUR_MS : DAY_MS)) + 1;
}
function periodLabel(group, d) {  // as the spend report names its periods
  const two = (n) => String(n).padStart(2, "0");
  const day = `${String(d.getUTCFullYear()).padStart(4, "0")}-${two(d.getUTCMonth() + 1)}`;
  if (group === "month") return day;
  if (group === "day") return `${day}-${two(d.getUTCDate())}`;
  return `${day}-${two(d.getUTCDate())}T${two(d.getUTCHours())}:00:00Z`;
}
