// DOM helpers and formatting. Text from peers (names, file names, reasons) only ever goes in
// through textContent / attributes, never innerHTML.

/** Make an element: h("li", {class: "row", dataset: {id}}, child, "text", ...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = String(v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Set text only when it changed (no layout work for unchanged rows). */
export function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

export function $(id) {
  return document.getElementById(id);
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** Sizes as node/units.py prints them: "1000 B", "1.5 MiB". */
export function size(n) {
  n = Number(n) || 0;
  if (n < 1024) return `${Math.round(n)} B`;
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n.toFixed(1)} ${UNITS[i]}`;
}

export function rate(bps) {
  return `${size(bps)}/s`;
}

export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}

export function ago(unix) {
  if (!unix) return "never";
  const age = Math.max(0, Date.now() / 1000 - unix);
  if (age < 5) return "just now";
  if (age < 120) return `${Math.round(age)} s ago`;
  if (age < 7200) return `${Math.round(age / 60)} min ago`;
  if (age < 172800) return `${Math.round(age / 3600)} h ago`;
  return new Date(unix * 1000).toLocaleDateString();
}

export function short(id) {
  return String(id || "").slice(0, 8);
}

/**
 * A list whose rows are kept by key: show(keys) puts exactly those rows in that order, making a
 * row with create(key) the first time it is needed and calling update(key, el) when the key is
 * marked dirty (or new). Rows that leave are dropped (and made again if they come back).
 */
export class KeyedList {
  constructor(root, create, update) {
    this.root = root;
    this.create = create;
    this.update = update;
    this.rows = new Map();
    this.dirty = new Set();
  }

  mark(key) {
    this.dirty.add(key);
  }

  show(keys) {
    const want = new Set(keys);
    for (const [key, el] of this.rows) {
      if (!want.has(key)) {
        el.remove();
        this.rows.delete(key);
      }
    }
    let prev = null;
    for (const key of keys) {
      let el = this.rows.get(key);
      if (!el) {
        el = this.create(key);
        this.rows.set(key, el);
        this.update(key, el);
      } else if (this.dirty.has(key)) {
        this.update(key, el);
      }
      const next = prev ? prev.nextSibling : this.root.firstChild;
      if (next !== el) this.root.insertBefore(el, next);
      prev = el;
    }
    this.dirty.clear();
  }
}

/** Pages of a list: `render(count)` draws "1–50 of 200  ‹ ›", `slice(items)` the page. */
export class Pager {
  constructor(nav, size, onChange) {
    this.nav = nav;
    this.size = size;
    this.page = 0;
    this.onChange = onChange;
    this.count = -1;
  }

  slice(items) {
    const pages = Math.max(1, Math.ceil(items.length / this.size));
    if (this.page >= pages) this.page = pages - 1;
    this.render(items.length);
    return items.slice(this.page * this.size, (this.page + 1) * this.size);
  }

  render(count) {
    if (count === this.count && this.nav.dataset.page === String(this.page)) return;
    this.count = count;
    this.nav.dataset.page = String(this.page);
    this.nav.replaceChildren();
    if (count <= this.size) return;
    const first = this.page * this.size + 1;
    const last = Math.min(count, first + this.size - 1);
    const go = (d) => () => {
      this.page += d;
      this.onChange();
    };
    this.nav.append(
      h("span", { text: `${first}–${last} of ${count}` }),
      h("button", { type: "button", class: "small", "aria-label": "Previous page",
        disabled: this.page === 0, onclick: go(-1) }, "‹"),
      h("button", { type: "button", class: "small", "aria-label": "Next page",
        disabled: last >= count, onclick: go(1) }, "›"),
    );
  }
}

/** A short message in the corner (role=status, read by screen readers). */
export function toast(message, bad = false) {
  const el = h("div", { class: bad ? "toast bad" : "toast", text: message });
  $("toasts").append(el);
  setTimeout(() => el.remove(), bad ? 8000 : 4000);
}
