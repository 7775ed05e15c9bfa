/* The spend dashboard: a thin client of the admin API (/api/client/v1). This module signs in
 * and out, polls, and wires the page's parts (spend.js, end_users.js, budgets.js, editor.js,
 * batches.js) together.
 *
 * The tenant key lives in sessionStorage only and goes out as an Authorization header; it is
 * never put in a URL. Everything from the API is rendered with textContent (never parsed as
 * markup), and every rule (who may edit, what a valid budget is, how much is used) is the
 * API's: this page shows what the API answers.
 */

import { client } from "./api.js";
import { renderRunning } from "./batches.js";
import { renderBudgets } from "./budgets.js";
import { $ } from "./dom.js";
import { BudgetEditor } from "./editor.js";
import { EndUsersView } from "./end_users.js";
import { usd } from "./format.js";
import { SpendView } from "./spend.js";

const KEY_STORE = "gateway.dashboard.key";
const POLL_MS = 5000;

const state = { api: null, caller: null, timer: null, busy: false, again: false };
// (a module runs once the page is parsed: its parts find their elements)
const send = (path, options) => state.api(path, options);
const spend = new SpendView();
const endUsers = new EndUsersView(send);
const editor = new BudgetEditor(send, async () => {
  await refresh();
  $("budgets-title").focus();
});

// -- sign in and out --------------------------------------------------------------------

async function signIn(key) {
  const api = client(key, () => {
    if (state.caller) signOut("The key is no longer accepted; sign in again.");
  });
  state.caller = await api("/me");  // a refused key stays signed out
  state.api = api;
  sessionStorage.setItem(KEY_STORE, key);
  $("who-text").textContent =
    `Tenant ${state.caller.tenant} · key ${state.caller.key_name} (${state.caller.role}` +
    (state.caller.may_change_budgets ? ")" : ", read-only)");
  $("who").hidden = false;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("new-budget").hidden = !state.caller.may_change_budgets;
  await refresh();
  schedule();
  $("main").focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  clearTimeout(state.timer);
  state.timer = null;
  state.api = null;
  state.caller = null;
  spend.reset();
  endUsers.reset();
  $("budgets").replaceChildren();
  $("batches").tBodies[0].replaceChildren();
  editor.close();
  $("who").hidden = true;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("api-key").value = "";
  $("api-key-error").textContent = message || "";
  $("api-key").focus();
}

// -- polling ----------------------------------------------------------------------------

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    if (!state.api) return;
    if (!document.hidden) {
      try { await refresh(); } catch (e) { /* shown by refresh */ }
    }
    if (state.api) schedule();
  }, POLL_MS);
}

function filters() {
  return { from: $("f-from").value, to: $("f-to").value,
           group_by: $("f-group").value, model: $("f-model").value };
}
function queryOf(values) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) if (value) query.set(name, value);
  return query.toString();
}

async function refresh() {
  const api = state.api;
  if (!api) return;
  if (state.busy) { state.again = true; return; }  // once the one under way is done
  state.busy = true;
  state.again = false;
  try {
    const asked = filters();
    const endUser = endUsers.statusPath();
    const [report, budgets, status, running, top, ofEndUser] = await Promise.all([
      api(`/spend/report?${queryOf(asked)}`), api("/budgets"), api("/budgets/status"),
      api("/batches/running"), api(endUsers.topPath(asked)), endUser && api(endUser)]);
    $("filters-error").textContent = "";
    spend.render(report, asked);
    renderBudgets($("budgets"), budgets.data, status.budgets, {
      mayChange: state.caller && state.caller.may_change_budgets,
      edit: (budget) => editor.show(budget),
      remove: deleteBudget,
    });
    renderRunning(running.data);
    endUsers.render(top, ofEndUser, budgets.data);
    $("budgets-error").textContent = "";
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every ${POLL_MS / 1000} s.`;
  } catch (error) {
    if (error.param === "from" || error.param === "to" || error.param === "group_by") {
      $("filters-error").textContent = error.message;
    } else if (state.api) {
      $("budgets-error").textContent = `Could not refresh: ${error.message}`;
    }
  } finally {
    state.busy = false;
  }
  if (state.again) await refresh();
}

async function deleteBudget(budget) {
  if (!window.confirm(`Delete budget ${budget.name}?`)) return;
  try {
    await state.api(`/budgets/${encodeURIComponent(budget.id)}`, { method: "DELETE" });
  } catch (error) {
    $("budgets-error").textContent = error.message;
    return;
  }
  if (editor.editing && editor.editing.id === budget.id) editor.close();
  await refresh();
}

// -- wiring -----------------------------------------------------------------------------

function init() {
  $("budgets-title").setAttribute("tabindex", "-1");
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("api-key-error").textContent = "";
    $("api-key").removeAttribute("aria-invalid");
    if (!key) {
      $("api-key").setAttribute("aria-invalid", "true");
      $("api-key-error").textContent = "Enter a tenant key.";
      return;
    }
    try {
      await signIn(key);
      $("api-key").value = "";
    } catch (error) {
      $("api-key").setAttribute("aria-invalid", "true");
      $("api-key-error").textContent = error.message;
    }
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
  for (const id of ["f-group", "f-model"]) $(id).addEventListener("change", () => refresh());
  $("new-budget").addEventListener("click", () => editor.show(null));
  $("budget-cancel").addEventListener("click", () => { editor.close(); $("new-budget").focus(); });
  document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) {
    signIn(saved).catch(() => signOut("Your saved key is no longer accepted; sign in again."));
  } else {
    $("api-key").focus();
  }
}

// the page's formats, read by its browser tests (and handy from the console)
window.gatewayDashboard = Object.freeze({ usd });

init();
