/* The page's few DOM helpers. Text from the API goes in as textContent, never as markup. */

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

/* A figure's exact value in data-value (what the tests and a reader's tools compare), its
 * text for people. */
export function setFigure(node, value, text) {
  node.dataset.value = String(value);
  node.textContent = text;
}

/* A table's body: a row per item, filled by `fill(row, item)`, else one row saying `none`. */
export function fillTable(table, items, none, fill) {
  const body = table.tBodies[0];
  body.replaceChildren();
  if (items.length === 0) {
    const cell = body.insertRow().insertCell();
    cell.colSpan = table.tHead.rows[0].cells.length;
    cell.textContent = none;
    return;
  }
  for (const item of items) fill(body.insertRow(), item);
}

/* Right-aligned figure cells ([data-field, value, text] each) at the end of a table row. */
export function figureCells(row, cells) {
  for (const [field, value, text] of cells) {
    const cell = el("td", { class: "num", "data-field": field });
    setFigure(cell, value, text);
    row.appendChild(cell);
  }
}
