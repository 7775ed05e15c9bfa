/* The spend report: totals (and the batch work's share of them), the chart of every period
 * of the range stacked by model, and the per-model table. */

import { CostChart } from "./bars.js";
import { $, el, figureCells, fillTable, setFigure } from "./dom.js";
import { integer, usd } from "./format.js";

export class SpendView {
  constructor() {
    this.chart = new CostChart("chart", "model", (i) => this.batchFooter(i));
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
    this.chart.reset();
    this.models = new Set();  // (another tenant's models may differ)
    $("f-model").replaceChildren(el("option", { value: "" }, "All models"));
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
    const byPeriod = new Map(report.timeseries.map((p) => [p.period, p]));
    const stacks = report.by_model.map((m) => ({
      label: m.model_key,
      cost: (period) => {
        const found = ((byPeriod.get(period) || {}).by_model || []).find(
          (b) => b.model_key === m.model_key);
        return found ? found.cost : 0;
      },
    }));
    const labels = this.chart.draw(report, asked, stacks);
    this.batch = labels.map((period) => (byPeriod.get(period) || {}).batch_cost || 0);
  }

  // the hovered period's batch share, when it has one
  batchFooter(index) {
    const cost = this.batch[index] || 0;
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

/* The spend tables' figure columns (those marked data-figures="spend": per model, per end
 * user, per tenant), after the column naming each row's subject. */
for (const table of document.querySelectorAll('table[data-figures="spend"]')) {
  table.tHead.rows[0].append(...["Cost (USD)", "Requests", "Input tokens", "Output tokens"].map(
    (name) => el("th", { scope: "col", class: "num" }, name)));
}

/* A row's cost, requests and tokens, each with its exact value (the spend report's fields). */
export function spendCells(row, figures) {
  figureCells(row, [["cost", figures.cost, usd(figures.cost)],
                    ["requests", figures.requests, integer.format(figures.requests)],
                    ["input_tokens", figures.input_tokens, integer.format(figures.input_tokens)],
                    ["output_tokens", figures.output_tokens,
                     integer.format(figures.output_tokens)]]);
}
