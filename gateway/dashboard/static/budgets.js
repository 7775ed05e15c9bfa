/* Budget cards: what each budget applies to and does, a gauge per limit with what it refuses
 * now, and (for an admin key) its edit and delete buttons. A per-end-user budget is a
 * template: its cards give each end user's limits, whose use is shown per end user. */

import { el } from "./dom.js";
import { duration, integer, usd } from "./format.js";

export const LIMITS = ["max_tokens_per_hour", "max_tokens_per_day", "max_cost_per_hour",
                       "max_cost_per_day", "max_cost_per_month"];
export const LIMIT_NAMES = {
  max_tokens_per_hour: "Tokens per hour", max_tokens_per_day: "Tokens per day",
  max_cost_per_hour: "Cost per hour", max_cost_per_day: "Cost per day",
  max_cost_per_month: "Cost per month",
};

export const perEndUser = (budget) => budget.per === "end_user";

/* `controls`: {mayChange, edit(budget), remove(budget)}. */
export function renderBudgets(container, budgets, statuses, controls) {
  const byId = new Map(statuses.map((s) => [s.id, s]));
  const cards = budgets.map((budget) => budgetCard(budget, byId.get(budget.id), controls));
  if (cards.length === 0) cards.push(el("p", { class: "help" }, "No budgets yet."));
  container.replaceChildren(...cards);
}

function budgetCard(budget, status, controls) {
  const card = el("article", { class: "budget", "data-budget-id": budget.id,
                               "data-source": budget.source });
  const titleId = `budget-${budget.id}`.replace(/[^A-Za-z0-9_-]/g, "_");
  card.setAttribute("aria-labelledby", titleId);
  const head = el("header");
  head.appendChild(el("h3", { id: titleId }, budget.name));
  head.appendChild(el("span", { class: "badge", "data-role": "source" },
                      budget.source === "file" ? "source: file (YAML)" : "source: api"));
  head.appendChild(el("span", { class: "badge", "data-role": "action" }, actionText(budget)));
  if (perEndUser(budget)) {
    head.appendChild(el("span", { class: "badge", "data-role": "per" }, "per end user"));
  }
  if (budget.end_user_required) {
    head.appendChild(el("span", { class: "badge", "data-role": "end-user-required" },
                        "end user required"));
  }
  card.appendChild(head);
  const scope = [budget.key && `key ${budget.key}`, budget.model && `model ${budget.model}`,
                 budget.domain && `domain ${budget.domain}`].filter(Boolean);
  if (scope.length) card.appendChild(el("p", { class: "help" }, `Only ${scope.join(", ")}`));
  if (perEndUser(budget)) {
    card.appendChild(el("p", { class: "help", "data-role": "per-note" },
      "Each end user of the tenant has these limits on their own: look an end user up " +
      "under End users to see what they have used."));
    for (const name of LIMITS) {
      if (budget[name] !== null && budget[name] !== undefined) {
        card.appendChild(eachEndUser(name, budget[name]));
      }
    }
  } else {
    for (const limit of (status ? status.limits : [])) {
      card.appendChild(gauge(limit, budget.alert_threshold));
    }
  }
  if (budget.source === "file") {
    card.appendChild(el("p", { class: "note" },
      "Defined in the gateway's YAML configuration: edit the file to change it (it is reloaded on save)."));
  } else if (controls.mayChange) {
    card.appendChild(buttons(budget, controls));
  }
  return card;
}

/* "action: reject", or for a downgrade the models it serves instead, in order. */
export function actionText(budget) {
  const fallbacks = budget.fallback_model || [];
  return budget.action === "downgrade" && fallbacks.length
    ? `action: downgrade → ${fallbacks.join(", ")}` : `action: ${budget.action}`;
}

function buttons(budget, controls) {
  const actions = el("div", { class: "actions" });
  const edit = el("button", { type: "button", class: "secondary", "data-action": "edit" },
                  "Edit");
  edit.setAttribute("aria-label", `Edit budget ${budget.name}`);
  edit.addEventListener("click", () => controls.edit(budget));
  const remove = el("button", { type: "button", class: "danger", "data-action": "delete" },
                    "Delete");
  remove.setAttribute("aria-label", `Delete budget ${budget.name}`);
  remove.addEventListener("click", () => controls.remove(budget));
  actions.append(edit, remove);
  return actions;
}

const isCost = (name) => name.startsWith("max_cost");
const windowOf = (name) => name.slice(name.lastIndexOf("_") + 1);  // hour, day, month
const span = (window) => (window === "month" ? "calendar month (UTC)" : `rolling ${window}`);
export const showFor = (name) => (v) => (isCost(name) ? usd(v) : `${integer.format(v)} tokens`);

/* A per-end-user limit: each end user's maximum, no one's use (the template's). */
function eachEndUser(name, max) {
  const box = el("div", { class: "limit", "data-limit": name });
  const label = el("div", { class: "label" });
  label.appendChild(el("span", {}, LIMIT_NAMES[name]));
  label.appendChild(el("span", { "data-role": "figures" },
                       `up to ${showFor(name)(max)} for each end user`));
  box.appendChild(label);
  box.appendChild(el("div", { class: "resets", "data-role": "resets" },
                     `${span(windowOf(name))}, counted per end user`));
  return box;
}

/* A limit's gauge from the status API: its use of the maximum, when it frees up, and what it
 * refuses now. */
export function gauge(limit, threshold) {
  const cost = isCost(limit.limit);
  const show = showFor(limit.limit);
  const box = el("div", { class: "limit", "data-limit": limit.limit });
  const label = el("div", { class: "label" });
  label.appendChild(el("span", {}, LIMIT_NAMES[limit.limit] || limit.limit));
  label.appendChild(el("span", { "data-role": "figures" },
                       `${show(limit.used)} of ${show(limit.max)} (${Math.round(limit.ratio * 100)}%)`));
  box.appendChild(label);
  const level = levelOf(limit, threshold);
  box.appendChild(meter(limit, level, LIMIT_NAMES[limit.limit] || limit.limit));
  const where = span(limit.window);
  const resets = limit.resets_in_s === null || limit.resets_in_s === undefined
    ? `${where}; nothing counted yet`
    : limit.window === "month"
      ? `${where}; resets in ${duration(limit.resets_in_s)}`
      : `${where}; capacity frees up in ${duration(limit.resets_in_s)}`;
  box.appendChild(el("div", { class: "resets", "data-role": "resets" }, resets));
  const refusing = refusal(limit, level, cost, show);
  if (refusing) box.appendChild(el("div", { class: `refusing ${level}`, "data-role": "refusing" },
                                   refusing));
  return box;
}

/* ok, warn (past the budget's alert threshold) or over (the limit reached). */
export function levelOf(limit, threshold) {
  if (limit.ratio >= 1) return "over";
  return threshold !== null && threshold !== undefined && limit.ratio >= threshold ? "warn" : "ok";
}

/* A limit's use of its maximum as a bar (a meter, named `name` for assistive technology). */
export function meter(limit, level, name) {
  const show = showFor(limit.limit);
  const bar = el("div", {
    class: `gauge ${level}`, role: "meter", "aria-valuemin": "0",
    "aria-valuemax": String(limit.max), "aria-valuenow": String(Math.min(limit.used, limit.max)),
    "aria-valuetext": `${show(limit.used)} of ${show(limit.max)}` +
      (level === "over" ? ", limit reached" : level === "warn" ? ", past the alert threshold" : ""),
    "aria-label": name, "data-level": level,
  });
  const fill = el("div", { class: "fill" });
  fill.style.width = `${Math.min(limit.ratio, 1) * 100}%`;
  bar.appendChild(fill);
  return bar;
}

/* What the limit refuses now, from the status API's `available` (max - used, reservations in
 * flight counted): nothing at all once it is reached; past the alert threshold, any request
 * whose reservation is larger than what is left. */
function refusal(limit, level, cost, show) {
  const available = limit.available === undefined ? Math.max(limit.max - limit.used, 0)
    : limit.available;
  if (level === "over" || available <= 0) return "Refusing requests: the limit is reached.";
  if (level !== "warn") return "";
  return cost
    ? `Refusing any request that may cost more than the ${show(available)} left.`
    : `Refusing any request that needs more than the ${show(available)} left ` +
      "(its input plus max_tokens).";
}
