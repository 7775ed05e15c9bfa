/* A chart of cost per period, stacked (by model, by tenant): a bar for every hour, day or
 * month of the range, zero where nothing was spent, at most MAX_PERIODS of them (the latest;
 * the caption says so). Chart.js draws it; the tables beside each chart carry the same
 * figures, so a page without it still has them. */

import { $, el } from "./dom.js";
import { decimalsOf, integer, usd } from "./format.js";

const MAX_PERIODS = 744;  // bars in a chart at most: 31 days of hours
const COLOURS = ["#0b5cad", "#d4622b", "#2e8540", "#8a3ffc", "#b28600", "#007d79",
                 "#c2185b", "#5a6872"];
export const REST_COLOUR = "#9aa5b1";  // a stack of "the rest, together"

// past the palette, hues a golden angle apart: neighbours never alike
const colour = (i) => COLOURS[i] || `hsl(${Math.round((i * 137.508) % 360)}, 60%, 40%)`;

export class CostChart {
  /* Fills the page's <figure data-chart="ID" data-label="..."> with its canvas (id ID, named
   * by data-label) and caption (id ID-caption). `by`: what the bars are stacked by, for the
   * caption; `footer(index)`: a tooltip's last line for that period ("": none). */
  constructor(canvas, by, footer = () => "") {
    this.canvas = canvas;
    this.captionId = `${canvas}-caption`;
    this.by = by;
    this.footer = footer;
    this.chart = null;
    const figure = document.querySelector(`figure[data-chart="${canvas}"]`);
    const box = el("div", { class: "chart-box" });
    box.appendChild(el("canvas", { id: canvas, role: "img", "aria-label": figure.dataset.label }));
    figure.replaceChildren(box, el("figcaption", { id: this.captionId },
                                   `Cost per period, stacked by ${by}.`));
  }

  /* The periods of `report` (its group_by; those with spend in its timeseries) over the range
   * `asked` (from, to), a stack per `stacks` item: {label, cost(period) in USD, colour?}.
   * Returns the periods drawn, oldest first. */
  draw(report, asked, stacks) {
    const { labels, total } = periods(report, asked);
    const datasets = stacks.map((stack, i) => ({
      label: stack.label, backgroundColor: stack.colour || colour(i),
      data: labels.map((period) => stack.cost(period)),
    }));
    this.caption(report.group_by, labels, total);
    if (typeof window.Chart !== "function") return labels;  // the tables have the figures
    if (this.chart) {
      this.chart.data.labels = labels;
      this.chart.data.datasets = datasets;
      this.chart.update("none");
    } else {
      this.chart = new window.Chart($(this.canvas), chartConfig(labels, datasets, (items) =>
        (items.length ? this.footer(items[0].dataIndex) : "")));
    }
    return labels;
  }

  reset() {
    if (this.chart) { this.chart.destroy(); this.chart = null; }
  }

  caption(unit, labels, total) {
    const caption = $(this.captionId);
    caption.dataset.periods = String(total);
    caption.dataset.shown = String(labels.length);
    caption.textContent = !labels.length ? "No spend in this range."
      : `Cost per ${unit}, stacked by ${this.by}, ${labels[0]} to ${labels[labels.length - 1]}` +
        (total > labels.length
          ? `: showing the last ${integer.format(labels.length)} of ${integer.format(total)} ` +
            `${unit}s (the chart's limit). The totals and the table cover the whole range; ` +
            "narrow the range or group by a longer period to chart the rest."
          : ".");
  }
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
