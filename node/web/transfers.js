// Transfers: the model (one object per transfer id, moved by events) and its list, a page of
// rows kept by id and updated in place once per animation frame.
import { post, enc } from "./api.js";
import { $, h, setText, KeyedList, Pager, size, rate, duration, toast } from "./dom.js";

const FINAL = new Set(["done", "failed", "cancelled"]);
const WHOLE = new Set(["transfer_started", "transfer_done", "transfer_failed"]);
const PAGE = 50;
const FILTERS = {
  all: () => true,
  live: (t) => !FINAL.has(t.state),
  done: (t) => t.state === "done",
  failed: (t) => t.state === "failed" || t.state === "cancelled",
};

export function initiator(t) {
  return (t.direction === "push" && t.role === "send") || (t.direction === "pull" && t.role === "receive");
}

function fraction(t) {
  const total = Number(t.size) || 0;
  if (total <= 0) return t.state === "done" ? 1 : 0;
  return Math.min(1, (Number(t.bytes) || 0) / total);
}

function describe(t) {
  const text = describeOne(t);
  if (t.kind !== "batch") return text;
  // A batch: its file count first; one sent as plain pushes (its peer has no batches) says so.
  const files = `${t.files_done || 0}/${t.files || 0} files`;
  const fell = t.fallback && t.fallback.length ? " · sent one by one (the peer has no batches)" : "";
  return `${files} · ${text}${fell}`;
}

function describeOne(t) {
  const pct = `${Math.floor(fraction(t) * 100)}%`;
  const amounts = `${size(t.bytes)} / ${size(t.size)}`;
  switch (t.state) {
    case "active": {
      const r = Number(t.rate) || 0;
      const left = Math.max(0, (Number(t.size) || 0) - (Number(t.bytes) || 0));
      const eta = r > 0 ? `ETA ${duration(left / r)}` : "ETA –:––";
      return `${pct} · ${amounts} · ${rate(r)} · ${eta}`;
    }
    case "done": {
      const secs = Math.max(0, (t.finished || 0) - (t.started || 0));
      const parts = [`${size(t.size)} in ${secs.toFixed(1)} s`];
      if (t.skipped) parts.push("already held, no bytes sent");
      if (t.path && t.path !== t.name) parts.push(`saved as ${t.path}`);
      if (t.sha256) parts.push(`sha256 ${t.sha256}`);
      return parts.join(" · ");
    }
    case "failed":
    case "cancelled": {
      const e = t.error || {};
      return `${e.code || t.state}: ${e.reason || ""} · ${amounts}`;
    }
    case "retrying": {
      const e = t.error || {};
      return `retrying (attempt ${t.attempts || 1}) after ${e.code || "an error"}: ${e.reason || ""}`;
    }
    default:
      return `${t.state} · ${amounts}`;
  }
}

const BADGE = { done: "ok", failed: "bad", cancelled: "bad", retrying: "warn", active: "accent" };

export class Transfers {
  constructor(app) {
    this.app = app;
    this.items = new Map();
    this.filter = "all";
    this.reorder = true;
    this.keys = [];
    this.list = new KeyedList($("transfers"), (k) => this.create(k), (k, el) => this.update(k, el));
    this.pager = new Pager($("transfers-pager"), PAGE, () => this.resort());
    for (const chip of document.querySelectorAll("[data-filter]")) {
      chip.addEventListener("click", () => {
        this.filter = chip.dataset.filter;
        for (const c of document.querySelectorAll("[data-filter]")) {
          c.setAttribute("aria-pressed", String(c === chip));
        }
        this.pager.page = 0;
        this.resort();
      });
    }
  }

  resort() {
    this.reorder = true;
    this.app.schedule();
  }

  load(list) {
    this.items.clear();
    for (const t of list) this.items.set(t.id, { ...t });
    for (const key of this.list.rows.keys()) this.list.mark(key);
    this.resort();
  }

  /** One event of the stream; true when it concerned a transfer. */
  apply(name, d) {
    if (name.startsWith("batch_")) return this.batch(name, d);
    if (!name.startsWith("transfer_") || !d || !d.id) return false;
    let t = this.items.get(d.id);
    if (WHOLE.has(name)) {
      if (t && FINAL.has(t.state) && name === "transfer_started") return true;
      const next = { ...(t || {}), ...d };
      delete next.event;
      this.items.set(d.id, next);
      if (!t || t.job !== next.job) this.reorder = true;
      t = next;
    } else {
      if (!t || FINAL.has(t.state)) return true; // unknown (before our load) or over already
      if (name === "transfer_progress") {
        for (const k of ["bytes", "size", "sent", "offset", "rate"]) if (k in d) t[k] = d[k];
        t.state = "active";
      } else if (name === "transfer_retry") {
        t.state = "retrying";
        t.attempts = d.attempt;
        t.error = { code: d.code, reason: d.reason };
      } else if (name === "transfer_reset") {
        t.bytes = 0;
        t.offset = 0;
      } else if (name === "transfer_resumed") {
        t.offset = d.offset;
      } else {
        return true;
      }
    }
    t._ts = d.ts;
    if (name === "transfer_done" || name === "transfer_failed") this.reorder = true; // filters
    this.list.mark(d.id);
    this.app.schedule();
    return true;
  }

  /** A batch's manifest is known (its totals), its file count moved, or it fell back to
   * plain pushes (its peer has no batches). */
  batch(name, d) {
    const t = d && d.id ? this.items.get(d.id) : null;
    if (!t || FINAL.has(t.state)) return true;
    if (name === "batch_started") {
      for (const k of ["files", "files_done", "size", "missing"]) if (k in d) t[k] = d[k];
    } else if (name === "batch_progress") t.files_done = d.files_done;
    else if (name === "batch_fallback") t.fallback = d.transfers;
    else return true;
    this.list.mark(d.id);
    this.app.schedule();
    return true;
  }

  add(t) {
    if (!this.items.has(t.id)) this.items.set(t.id, { ...t });
    this.resort();
  }

  /** Row keys in display order: newest first; a batch (job) as one header and its files. */
  order() {
    const keep = FILTERS[this.filter] || FILTERS.all;
    const all = [...this.items.values()].filter(keep);
    all.sort((a, b) => (b.started || 0) - (a.started || 0));
    const keys = [];
    const jobs = new Map();
    for (const t of all) {
      if (t.job) {
        if (!jobs.has(t.job)) jobs.set(t.job, []);
        jobs.get(t.job).push(t);
      }
    }
    const seen = new Set();
    const shown = new Set(all.map((t) => t.id));
    for (const t of all) {
      if (!t.job) {
        keys.push(t.id);
        // A batch sent as plain pushes (its peer has no batches): they follow its row.
        if (jobs.has(t.id)) for (const c of jobs.get(t.id).reverse()) keys.push(c.id);
      } else if (shown.has(t.job)) continue; // listed under its batch's row
      else if (!seen.has(t.job)) {
        seen.add(t.job);
        keys.push(`job:${t.job}`);
        for (const c of jobs.get(t.job).reverse()) keys.push(c.id);
      }
    }
    return keys;
  }

  render() {
    if (this.reorder) {
      this.reorder = false;
      const keys = this.order();
      this.keys = this.pager.slice(keys);
      for (const k of this.keys) if (k.startsWith("job:")) this.list.mark(k);
      setText($("transfers-count"), this.items.size ? `(${this.items.size})` : "");
      $("transfers-empty").hidden = keys.length > 0;
    } else {
      // A child moved: its batch header too (a batch record's own row has its own events).
      for (const k of this.list.dirty) {
        const t = this.items.get(k);
        if (t && t.job && !this.items.has(t.job)) this.list.mark(`job:${t.job}`);
      }
    }
    this.list.show(this.keys);
  }

  create(key) {
    if (key.startsWith("job:")) {
      const li = h("li", { class: "row batch-head", dataset: { job: key.slice(4) } },
        h("div", { class: "title" }, h("span", { class: "dir" }), h("span", { class: "name" })),
        h("div", { class: "actions" }, h("span", { class: "badge" })),
        h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 },
          h("div")),
        h("div", { class: "sub" }));
      return li;
    }
    const t = this.items.get(key);
    const cancel = h("button", { type: "button", class: "small cancel", onclick: () => this.cancel(key) }, "Cancel");
    const retry = h("button", { type: "button", class: "small retry", onclick: () => this.retry(key) }, "Retry");
    return h("li", { class: t && t.job ? "row in-batch" : "row", dataset: { id: key } },
      h("div", { class: "title" }, h("span", { class: "dir" }), h("span", { class: "name" })),
      h("div", { class: "actions" }, h("span", { class: "badge state" }), cancel, retry),
      h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100 },
        h("div")),
      h("div", { class: "sub" }));
  }

  update(key, li) {
    if (key.startsWith("job:")) return this.updateJob(key.slice(4), li);
    const t = this.items.get(key);
    if (!t) return;
    const [title, actions, bar, sub] = li.children;
    const peer = t.peer_name || String(t.peer || "").slice(0, 8);
    setText(title.children[0], t.role === "send" ? `↑ to ${peer}` : `↓ from ${peer}`);
    setText(title.children[1], t.name || t.sha256 || t.id);
    title.children[1].title = t.name || "";
    const [badge, cancel, retry] = actions.children;
    setText(badge, t.state);
    badge.className = `badge state ${BADGE[t.state] || ""}`;
    cancel.hidden = FINAL.has(t.state);
    cancel.setAttribute("aria-label", `Cancel ${t.name || t.id}`);
    retry.hidden = !(initiator(t) && (t.state === "failed" || t.state === "cancelled"));
    retry.setAttribute("aria-label", `Retry ${t.name || t.id}`);
    const f = fraction(t);
    bar.firstChild.style.transform = `scaleX(${f})`;
    const pct = String(Math.floor(f * 100));
    if (bar.getAttribute("aria-valuenow") !== pct) {
      bar.setAttribute("aria-valuenow", pct);
      bar.setAttribute("aria-label", `${t.name || t.id}: ${pct}%`);
    }
    setText(sub, describe(t));
    li.dataset.state = t.state;
    if (t._ts) li.dataset.ts = String(t._ts);
  }

  updateJob(job, li) {
    const kids = [...this.items.values()].filter((t) => t.job === job);
    const [title, actions, bar, sub] = li.children;
    const first = kids[0] || {};
    const peer = first.peer_name || String(first.peer || "").slice(0, 8);
    const total = kids.reduce((s, t) => s + (Number(t.size) || 0), 0);
    const held = kids.reduce((s, t) => s + (Number(t.bytes) || 0), 0);
    const done = kids.filter((t) => t.state === "done").length;
    const failed = kids.filter((t) => t.state === "failed" || t.state === "cancelled").length;
    const live = kids.some((t) => !FINAL.has(t.state));
    const r = kids.reduce((s, t) => s + (t.state === "active" ? Number(t.rate) || 0 : 0), 0);
    setText(title.children[0], first.role === "send" ? `↑ to ${peer}` : `↓ from ${peer}`);
    setText(title.children[1], `batch of ${kids.length} files`);
    const state = live ? "active" : failed ? "failed" : "done";
    setText(actions.firstChild, state);
    actions.firstChild.className = `badge ${BADGE[state] || ""}`;
    const f = total > 0 ? Math.min(1, held / total) : live ? 0 : 1;
    bar.firstChild.style.transform = `scaleX(${f})`;
    bar.setAttribute("aria-valuenow", String(Math.floor(f * 100)));
    let text = `${done}/${kids.length} done · ${size(held)} / ${size(total)}`;
    if (live && r > 0) text += ` · ${rate(r)} · ETA ${duration((total - held) / r)}`;
    if (failed) text += ` · ${failed} failed`;
    setText(sub, text);
    li.dataset.state = state;
  }

  async cancel(id) {
    try {
      const t = await post(`/api/transfers/${enc(id)}/cancel`);
      this.apply(t.state === "done" ? "transfer_done" : "transfer_failed", t);
    } catch (err) {
      toast(`Cancel failed: ${err.message}`, true);
    }
  }

  async retry(id) {
    try {
      const t = await post(`/api/transfers/${enc(id)}/retry`);
      this.add(t);
      toast(`Retrying ${t.name || t.id}`);
    } catch (err) {
      toast(`Retry failed: ${err.message}`, true);
    }
  }
}
