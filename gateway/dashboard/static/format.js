/* The page's formats: money as the CLI prints it (gateway/admin/tables.py usd()), whole
 * numbers grouped, durations for people. */

export const integer = new Intl.NumberFormat("en-US");
export const NANO_DIGITS = 9;  // the store keeps nano-dollars: no amount has more decimals

/* The page's one money format. Without `digits`, the CLI's rule (gateway/admin/tables.py
 * usd()): four decimals, more for an amount too small to show in four, so a non-zero amount
 * never reads as $0.0000. With `digits`, exactly that many (chart ticks share theirs).
 * Never exponent notation: 6e-5 is $0.0001 here, and $0.00006 with digits = 5. */
export function usd(amount, digits) {
  const value = Number(amount);
  const magnitude = Math.abs(value);
  const tiny = digits === undefined && value !== 0 && magnitude < 0.00005;
  let text = fixed(magnitude, digits === undefined ? (tiny ? NANO_DIGITS : 4) : digits);
  if (tiny) text = text.replace(/0+$/, "");
  const [whole, fraction] = text.split(".");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return (value < 0 ? "-$" : "$") + grouped + (fraction === undefined ? "" : `.${fraction}`);
}

// `magnitude` to `places` decimals, rounded as Python's format() rounds (the exact binary
// value, an exact tie to even), so the page and the CLI print the same figure
function fixed(magnitude, places) {
  const up = magnitude.toFixed(places);  // exact value; a tie goes up
  const exact = magnitude.toFixed(places + 30);
  const point = exact.indexOf(".");
  if (!/^50*$/.test(exact.slice(point + 1 + places))) return up;
  const down = exact.slice(0, places ? point + 1 + places : point);
  return Number(down.slice(-1)) % 2 === 0 ? down : up;
}

// the decimals `value` needs to be shown exactly, to the nano-dollar
export function decimalsOf(value) {
  const fraction = Math.abs(Number(value)).toFixed(NANO_DIGITS).split(".")[1];
  return fraction.replace(/0+$/, "").length;
}

export function duration(seconds) {
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/* An ISO time as the page's periods are named: UTC, to the minute ("2026-05-01 13:05 UTC")
 * or the second; what is not a time, as it came. */
export const utcMinute = (iso) => utcTime(iso, 16);
export const utcSecond = (iso) => utcTime(iso, 19);

function utcTime(iso, length) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return String(iso);
  return `${when.toISOString().slice(0, length).replace("T", " ")} UTC`;
}
