/* Running batches: the tenant's Batch API jobs that still hold a reservation, and what each
 * holds (GET /batches/running). */

import { $, el, figureCells, fillTable } from "./dom.js";
import { integer, usd, utcMinute } from "./format.js";

export function renderRunning(batches) {
  fillTable($("batches"), batches, "No running batches.", (row, batch) => {
    row.dataset.batchId = batch.batch_id || "";
    row.appendChild(el("th", { scope: "row" }, batch.batch_id || "(being created upstream)"));
    for (const [field, text] of [["model", batch.model], ["endpoint", batch.endpoint],
                                 ["created_at", utcMinute(batch.created_at)],
                                 ["deadline", utcMinute(batch.deadline)]]) {
      row.appendChild(el("td", { "data-field": field }, text));
    }
    figureCells(row, [["reserved_usd", batch.reserved_usd, usd(batch.reserved_usd)],
                      ["reserved_tokens", batch.reserved_tokens,
                       integer.format(batch.reserved_tokens)]]);
  });
}
