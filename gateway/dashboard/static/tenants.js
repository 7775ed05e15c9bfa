/* An operator's tenant picker: "All tenants" (the overview) and every tenant its key may
 * name (GET /me's `tenants`); the page's parts marked data-scope="tenant" are shown for one
 * tenant, those marked "all" for the overview. A tenant key gets no picker: its page is its
 * own tenant's, as it has always been. */

import { $, el } from "./dom.js";

export const ALL = "all";  // the API's name for every tenant (?tenant=all)

export class TenantPicker {
  /* `changed(tenant)`: after the operator picks another tenant (or all of them). */
  constructor(changed) {
    this.changed = changed;
    this.tenant = null;  // what every call names: null for a tenant key
    $("f-tenant").addEventListener("change", () => this.pick($("f-tenant").value));
  }

  get all() { return this.tenant === ALL; }

  /* For the signed-in caller (GET /me): an operator starts on All tenants. */
  start(caller) {
    const operator = caller.operator === true;
    $("tenant-field").hidden = !operator;
    this.tenant = operator ? ALL : null;
    if (operator) {
      $("f-tenant").replaceChildren(el("option", { value: ALL }, "All tenants"),
                                    ...caller.tenants.map((t) => el("option", { value: t }, t)));
      $("f-tenant").value = ALL;
    }
    this.show();
  }

  pick(tenant) {
    $("f-tenant").value = tenant;
    if (tenant === this.tenant) return;
    this.tenant = tenant;
    this.show();
    this.changed(tenant);
  }

  stop() {
    this.tenant = null;
    $("tenant-field").hidden = true;
    $("f-tenant").replaceChildren();
    this.show();
  }

  show() {
    for (const part of document.querySelectorAll("[data-scope]")) {
      part.hidden = part.dataset.scope !== (this.all ? "all" : "tenant");
    }
    $("spend-of").textContent = this.all ? ", all tenants"
      : this.tenant ? `, tenant ${this.tenant}` : "";
  }
}
