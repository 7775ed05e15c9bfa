/* An operator's overview of every tenant (tenant=all): spend per tenant over time, the
 * budgets closest to their limits, and the requests budgets refused lately.
 *
 * The report of every tenant gives each tenant's totals (by_tenant) but one timeseries for
 * all of them, so the chart asks for the report of each of the TENANTS_CHARTED tenants that
 * spent most (a request each, no more however many tenants there are); the others are one
 * stack, "N more tenants": the whole's figures less those charted. */

import { forTenant } from "./api.js";
import { CostChart, REST_COLOUR } from "./bars.js";
import { LIMIT_NAMES, levelOf, meter, perEndUser, showFor } from "./budgets.js";
import { el, fillTable, $ } from "./dom.js";
import { integer, usd, utcSecond } from "./format.js";
import { spendCells } from "./spend.js";
import { ALL } from "./tenants.js";

export const TENANTS_CHARTED = 20;  // tenants with a stack (and a report request) of their own
const NEAREST = 10;  // limits listed, the highest use of its maximum first
const DENIALS = 20;  // the newest denials listed

const NANO = 1e9;
const nano = (usdAmount) => Math.round(usdAmount * NANO);

export class OverviewView {
  /* `pick(tenant)`: show that tenant's page (a tenant's name is a button). */
  constructor(pick) {
    this.pick = pick;
    this.chart = new CostChart("tenant-chart", "tenant");
  }

  /* Everything the overview shows, for the filters `asked` (`query`, as a query string):
   * `api` is the signed-in key's, naming no tenant. */
  async load(api, asked, query) {
    const every = forTenant(api, ALL);
    const [report, status, budgets, denials] = await Promise.all([
      every(`/spend/report?${query}`), every("/budgets/status"), every("/budgets"),
      every(`/denials?limit=${DENIALS}`)]);
    const charted = report.by_tenant.slice(0, TENANTS_CHARTED);
    const reports = await Promise.all(charted.map(
      (t) => forTenant(api, t.tenant)(`/spend/report?${query}`)));
    return { report, status, budgets: budgets.data, denials: denials.data,
             charted: charted.map((t, i) => ({ ...t, report: reports[i] })) };
  }

  render(data, asked) {
    this.renderSpend(data.report, data.charted, asked);
    renderNearest(data.status.limits, data.budgets, this.pick);
    renderDenials(data.denials, this.pick);
  }

  reset() {
    this.chart.reset();
    for (const id of ["tenants", "nearest", "denials"]) $(id).tBodies[0].replaceChildren();
    $("tenants-summary").textContent = "";
  }

  /* The chart (a stack per charted tenant, and the rest) and the table per tenant. */
  renderSpend(report, charted, asked) {
    const rest = report.by_tenant.slice(charted.length);
    const stacks = charted.map((t) => {
      const byPeriod = new Map(t.report.timeseries.map((p) => [p.period, p.cost]));
      return { label: t.tenant, cost: (period) => byPeriod.get(period) || 0 };
    });
    if (rest.length) {  // each period's whole, less the charted tenants' (to the nano-dollar)
      const whole = new Map(report.timeseries.map((p) => [p.period, nano(p.cost)]));
      stacks.push({
        label: more(rest.length), colour: REST_COLOUR,
        cost: (period) => Math.max(0, stacks.slice(0, charted.length).reduce(
          (left, stack) => left - nano(stack.cost(period)), whole.get(period) || 0)) / NANO,
      });
    }
    this.chart.draw(report, asked, stacks);
    fillTable($("tenants"), charted, "No spend in this range.", (row, t) => {
      row.dataset.tenant = t.tenant;
      row.appendChild(tenantCell(t.tenant, this.pick, "th"));
      spendCells(row, t);
    });
    if (rest.length) {
      const row = $("tenants").tBodies[0].insertRow();
      row.dataset.role = "rest";
      row.appendChild(el("th", { scope: "row" }, `${more(rest.length)}, together`));
      spendCells(row, together(rest));
    }
    $("tenants-summary").textContent = !report.by_tenant.length ? ""
      : `${integer.format(report.by_tenant.length)} ` +
        `${report.by_tenant.length === 1 ? "tenant" : "tenants"} spent ` +
        `${usd(report.total_cost)} in this range` +
        (rest.length ? `; the ${charted.length} who spent most, and ${more(rest.length)}:` : ":");
  }
}

const more = (n) => `${integer.format(n)} more ${n === 1 ? "tenant" : "tenants"}`;

/* The figures of `tenants` added up (cost to the nano-dollar). */
function together(tenants) {
  const sum = (field) => tenants.reduce((total, t) => total + t[field], 0);
  return { cost: tenants.reduce((total, t) => total + nano(t.cost), 0) / NANO,
           requests: sum("requests"), input_tokens: sum("input_tokens"),
           output_tokens: sum("output_tokens") };
}

function tenantCell(tenant, pick, tag = "td") {
  const cell = el(tag, tag === "th" ? { scope: "row" } : {});
  const button = el("button", { type: "button", class: "link", "data-tenant": tenant }, tenant);
  button.setAttribute("aria-label", `Show tenant ${tenant}`);
  button.addEventListener("click", () => pick(tenant));
  cell.appendChild(button);
  return cell;
}

/* The NEAREST limits with the highest use of their maximum (the status answer's order),
 * each tenant-wide: a per-end-user budget's limits are every end user's own (none is used by
 * the template the answer gives). Amber past the budget's alert threshold, red at 100%. */
function renderNearest(limits, budgets, pick) {
  const byKey = new Map(budgets.map((b) => [`${b.tenant}/${b.id}`, b]));
  const budgetOf = (limit) => byKey.get(`${limit.tenant}/${limit.budget_id}`) || {};
  const nearest = limits.filter((limit) => !perEndUser(budgetOf(limit))).slice(0, NEAREST);
  fillTable($("nearest"), nearest, "No budget has a limit.", (row, limit) => {
    const name = LIMIT_NAMES[limit.limit] || limit.limit;
    const show = showFor(limit.limit);
    const level = levelOf(limit, budgetOf(limit).alert_threshold);
    row.dataset.tenant = limit.tenant;
    row.dataset.budgetId = limit.budget_id;
    row.dataset.limit = limit.limit;
    row.appendChild(tenantCell(limit.tenant, pick, "th"));
    row.appendChild(el("td", { "data-field": "budget" }, limit.budget));
    row.appendChild(el("td", { "data-field": "limit" }, name));
    const use = el("td", { class: "use", "data-field": "ratio", "data-value": String(limit.ratio) });
    use.appendChild(meter(limit, level, `${limit.tenant}, ${limit.budget}: ${name}`));
    use.appendChild(el("span", { "data-role": "figures" },
      `${show(limit.used)} of ${show(limit.max)} (${Math.round(limit.ratio * 100)}%)`));
    row.appendChild(use);
  });
}

/* The newest denials of every tenant, as this instance remembers them. */
function renderDenials(denials, pick) {
  fillTable($("denials"), denials, "No request refused lately.", (row, denial) => {
    row.dataset.requestId = denial.request_id;
    row.appendChild(el("td", { "data-field": "at" }, utcSecond(denial.at)));
    row.appendChild(tenantCell(denial.tenant, pick));
    for (const [field, text] of [["budget", denial.budget],
                                 ["limit", LIMIT_NAMES[denial.limit] || denial.limit],
                                 ["model", denial.model], ["request_id", denial.request_id]]) {
      row.appendChild(el("td", { "data-field": field }, text));
    }
  });
}
