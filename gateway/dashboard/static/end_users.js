/* End users (the safety_identifier, user or x-end-user of a tenant's requests): those who
 * spent most in the range (GET /spend/end_users), and one end user's limits
 * (GET /budgets/status?end_user=ID): their per-end-user budgets as they stand for them, and
 * their own spend. */

import { actionText, gauge, perEndUser } from "./budgets.js";
import { $, el, fillTable, setFigure } from "./dom.js";
import { integer, usd } from "./format.js";
import { spendCells } from "./spend.js";

const TOP = 10;  // end users listed

export class EndUsersView {
  /* `send(path, options)`: the admin API of the signed-in key. */
  constructor(send) {
    this.send = send;
    this.id = null;  // the end user looked up
    this.budgets = [];  // the tenant's budgets, for their thresholds and fallbacks
    $("end-user-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.lookUp($("eu-id").value.trim());
    });
  }

  topPath(asked) {
    const query = new URLSearchParams({ limit: String(TOP) });
    for (const name of ["from", "to"]) if (asked[name]) query.set(name, asked[name]);
    return `/spend/end_users?${query}`;
  }

  statusPath(id = this.id) {
    return id === null ? null : `/budgets/status?end_user=${encodeURIComponent(id)}`;
  }

  render(top, status, budgets) {
    this.budgets = budgets;
    renderTop(top, (id) => this.lookUp(id));
    if (status && status.end_user === this.id) renderStatus(status, budgets);
  }

  async lookUp(id) {
    const input = $("eu-id");
    input.value = id;
    input.removeAttribute("aria-invalid");
    $("eu-id-error").textContent = "";
    if (!id) {
      this.fail("Enter an end user's id.");
      return;
    }
    let status;
    try {
      status = await this.send(this.statusPath(id));
    } catch (error) {
      this.fail(error.param === "end_user"
        ? error.message.replace(/ in the 'end_user' parameter/, "") : error.message);
      return;
    }
    this.id = id;
    renderStatus(status, this.budgets);
    $("end-user-title").focus();
  }

  fail(message) {
    $("eu-id").setAttribute("aria-invalid", "true");
    $("eu-id-error").textContent = message;
    $("eu-id").focus();
  }

  reset() {
    this.id = null;
    this.budgets = [];
    $("end-users").tBodies[0].replaceChildren();
    $("end-users-summary").textContent = "";
    $("end-user-status").hidden = true;
    $("eu-id").value = "";
    $("eu-id-error").textContent = "";
  }
}

function renderTop(top, lookUp) {
  fillTable($("end-users"), top.data, "No end user spend in this range.", (row, user) => {
    row.dataset.endUser = user.end_user;
    const head = el("th", { scope: "row" });
    const button = el("button", { type: "button", class: "link" }, user.end_user);
    button.setAttribute("aria-label", `Show the limits of end user ${user.end_user}`);
    button.addEventListener("click", () => lookUp(user.end_user));
    head.appendChild(button);
    row.appendChild(head);
    spendCells(row, user);
  });
  if (top.other.requests) {  // past the end users a day keeps apart, together
    const row = $("end-users").tBodies[0].insertRow();
    row.dataset.role = "other";
    row.appendChild(el("th", { scope: "row" }, "Others, together"));
    spendCells(row, top.other);
  }
  const listed = top.data.length;
  $("end-users-summary").textContent = !top.end_users ? ""
    : `${integer.format(top.end_users)} ${top.end_users === 1 ? "end user" : "end users"} ` +
      `spent ${usd(top.total_cost)} in this range` +
      (listed < top.end_users ? `; the ${listed} who spent most:` : ":");
}

/* One end user: what they spent in each window (every model), and each per-end-user budget
 * as it stands for them. The tenant's budgets (above) apply on top. */
function renderStatus(status, budgets) {
  $("end-user-status").hidden = false;
  $("end-user-title").textContent = `End user ${status.end_user}`;
  setFigure($("eu-hour"), status.per_hour.used_tokens,
            `${integer.format(status.per_hour.used_tokens)} tokens`);
  setFigure($("eu-day"), status.per_day.used_usd, usd(status.per_day.used_usd));
  setFigure($("eu-month"), status.per_month.used_usd, usd(status.per_month.used_usd));
  const byId = new Map(budgets.map((b) => [b.id, b]));
  const cards = status.budgets.filter(perEndUser).map((entry) => {
    const budget = byId.get(entry.id) || entry;
    const card = el("article", { class: "budget", "data-budget-id": entry.id });
    const head = el("header");
    head.appendChild(el("h4", {}, entry.name));
    head.appendChild(el("span", { class: "badge", "data-role": "action" }, actionText(budget)));
    card.appendChild(head);
    for (const limit of entry.limits) card.appendChild(gauge(limit, budget.alert_threshold));
    return card;
  });
  if (!cards.length) {
    cards.push(el("p", { class: "help" },
                  "No per-end-user budget: only the tenant's budgets limit this end user."));
  }
  $("end-user-budgets").replaceChildren(...cards);
}
