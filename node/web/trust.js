// The trust parts of the page: pending offers (`--accept prompt`), pairing (the 6-digit code
// on both nodes, then each user's yes/no) and the trust store. Every name here is a peer's
// claim: it only ever goes in as text, next to the id the connection proved.
import { get, post, enc } from "./api.js";
import { $, h, setText, size, toast } from "./dom.js";

const MAX_FILES_SHOWN = 5; // per offer: a batch of thousands must not draw thousands of rows
const ANSWERABLE = new Set(["shown", "peer_confirmed"]);
const STATE_WORDS = {
  start: "connecting…",
  committed: "exchanging the code…",
  revealed: "exchanging the code…",
  shown: "Does the other node show the same code?",
  confirmed: "You said yes: waiting for the other side…",
  peer_confirmed: "The other side said yes: does the code match here?",
  paired: "Paired: each node trusts the other now.",
  failed: "Pairing failed",
};

/** Pending offers (GET /api/offers): files a peer wants to send, waiting for a yes or no. */
export class Offers {
  constructor(app) {
    this.app = app;
    this.available = false;
    this.items = [];
    this.seq = 0;
  }

  async load() {
    const seq = ++this.seq; // an older answer arriving late must not overwrite a newer one
    let items = [];
    try {
      items = (await get("/api/offers")) || [];
      this.available = true;
    } catch (err) {
      if (err.status !== 404) toast(`Offers: ${err.message}`, true);
      this.available = false;
    }
    if (seq !== this.seq) return;
    this.items = items;
    this.render();
  }

  /** offer_decided: drop it at once (the list is read again anyway). */
  drop(id) {
    this.items = this.items.filter((o) => String(o.id) !== String(id));
    this.render();
  }

  render() {
    $("offers-card").hidden = !this.available || this.items.length === 0;
    setText($("offers-count"), this.items.length ? `(${this.items.length})` : "");
    $("offers").replaceChildren(...this.items.map((o) => this.row(o)));
  }

  row(o) {
    const id = String(o.id);
    const files = Array.isArray(o.files) ? o.files : [];
    const from = o.peer_name || "(no name)";
    // A batch (several files, a directory) is one offer: `files` are its top-level names (a
    // directory with the files under it), `batch` its totals (docs/api.md).
    const batch = o.batch && typeof o.batch === "object" ? o.batch : null;
    const total = batch ? Number(batch.size) || 0 : files.reduce((n, f) => n + (Number(f.size) || 0), 0);
    const count = batch ? Number(batch.files) || 0 : files.length;
    const names = batch ? Number(batch.names) || files.length : files.length;
    const what = !batch && files.length === 1 ? String(files[0].name) : `${count} file${count === 1 ? "" : "s"}`;
    const shown = files.slice(0, MAX_FILES_SHOWN);
    const list = h("ul", { class: "offer-files" }, ...shown.map((f) => h("li", {
      text: f.kind === "dir" ? `${f.name}/ · ${Number(f.files) || 0} files · ${size(f.size)}` : `${f.name} · ${size(f.size)}`,
    })));
    if (names > shown.length) list.append(h("li", { class: "muted", text: `and ${names - shown.length} more` }));
    return h("li", { class: "row offer", dataset: { offer: id, kind: batch ? "batch" : "file" } },
      h("div", { class: "title" }, h("span", { class: "dir", text: "from" }),
        h("span", { class: "name peer-name", text: from }), h("span", { class: "muted", text: `${what} · ${size(total)}` })),
      h("div", { class: "actions" },
        h("button", { type: "button", class: "small primary accept", "aria-label": `Accept ${what} from ${from}`, onclick: () => this.answer(id, "accept") }, "Accept"),
        h("button", { type: "button", class: "small danger reject", "aria-label": `Reject ${what} from ${from}`, onclick: () => this.answer(id, "reject") }, "Reject")),
      h("div", { class: "sub" }, h("span", { class: "mono peer-id", text: o.peer_human || o.peer, title: o.peer }), list));
  }

  async answer(id, verb) {
    try {
      await post(`/api/offers/${enc(id)}/${verb}`);
      toast(verb === "accept" ? "Accepted: the files are on their way." : "Rejected.");
    } catch (err) {
      toast(`Could not ${verb} the offer: ${err.message}`, true);
    }
    this.drop(id);
    this.load();
  }
}

/** The trust store (GET /api/trusted), shown as a list, and the `trusted` mark on peer rows. */
export class Trusted {
  constructor(app) {
    this.app = app;
    this.available = false;
    this.ids = new Set();
  }

  async load() {
    let list = [];
    try {
      list = (await get("/api/trusted")) || [];
      this.available = true;
    } catch (err) {
      if (err.status !== 404) toast(`Trusted peers: ${err.message}`, true);
      this.available = false;
    }
    this.ids = new Set(list.map((t) => t.node));
    this.app.peers.markTrusted(this.available);
    $("trusted-card").hidden = !this.available;
    $("trusted-empty").hidden = list.length > 0;
    setText($("trusted-count"), list.length ? `(${list.length})` : "");
    $("trusted").replaceChildren(...list.map((t) => h("li", { class: "row", dataset: { node: t.node } },
      h("div", { class: "title" }, h("span", { class: "name", text: t.name || "(no name)" }),
        h("span", { class: "badge", text: t.how === "paired" ? "paired" : "added by hand" })),
      h("div", { class: "actions" }, h("button", { type: "button", class: "small danger untrust",
        "aria-label": `Stop trusting ${t.name || t.node_human}`, onclick: () => this.set(t.node, false) }, "Untrust")),
      h("div", { class: "sub mono", text: t.node_human || t.node, title: t.node }))));
  }

  async set(node, on) {
    try {
      await post(on ? "/api/trust" : "/api/untrust", { peer: node });
      toast(on ? `${this.app.peers.label(node)} is trusted` : `${this.app.peers.label(node)} is no longer trusted`);
    } catch (err) {
      toast(`Could not change trust: ${err.message}`, true);
    }
    this.load();
  }
}

/** The pairing dialog: opened from a peer row (POST /api/pair) or by a peer asking to pair;
 * it follows the `pairing` events, reading the code from GET /api/pairings. */
export class Pairing {
  constructor(app) {
    this.app = app;
    this.peer = null; // node id the dialog is about
    this.dismissed = new Set(); // peer ids whose request the user closed: not reopened
    this.dialog = $("pair-dialog");
    $("pair-yes").addEventListener("click", () => this.answer(true));
    $("pair-no").addEventListener("click", () => this.answer(false));
    this.dialog.addEventListener("close", () => {
      if (this.peer) this.dismissed.add(this.peer);
      this.peer = null;
    });
  }

  async start(node) {
    this.dismissed.delete(node);
    this.show(node, { peer: node, state: "start", code: null, name: this.app.peers.label(node) });
    try {
      this.draw(await post("/api/pair", { peer: node }));
    } catch (err) {
      this.draw({ peer: node, state: "failed", why: err.message });
    }
  }

  show(node, p) {
    this.peer = node;
    this.draw(p);
    if (!this.dialog.open) this.dialog.showModal();
  }

  draw(p) {
    if (!p || p.peer !== this.peer) return;
    setText($("pair-peer"), p.name || this.app.peers.label(p.peer));
    setText($("pair-id"), this.app.peers.human(p.peer));
    setText($("pair-code"), p.code || "··· ···");
    const words = STATE_WORDS[p.state] || p.state;
    setText($("pair-status"), p.state === "failed" && p.why ? `${words}: ${p.why}` : words);
    this.dialog.dataset.state = p.state;
    const answerable = ANSWERABLE.has(p.state) && Boolean(p.code);
    $("pair-yes").hidden = !answerable;
    $("pair-no").hidden = !answerable;
    setText($("pair-close"), answerable ? "Later" : "Close");
    if (answerable && !this.dialog.contains(document.activeElement)) $("pair-yes").focus();
  }

  /** A `pairing` event (either side): read the list; a request we are asked to answer opens. */
  async refresh() {
    let list;
    try {
      list = (await get("/api/pairings")) || [];
    } catch {
      return;
    }
    const mine = this.peer && list.find((p) => p.peer === this.peer);
    if (mine) {
      this.draw(mine);
      if (mine.state === "paired") this.app.trusted.load();
      return;
    }
    if (this.dialog.open) return;
    const asked = list.find((p) => ANSWERABLE.has(p.state) && p.code && !this.dismissed.has(p.peer));
    if (asked) this.show(asked.peer, asked);
  }

  async answer(ok) {
    const peer = this.peer;
    if (!peer) return;
    try {
      this.draw(await post(`/api/pairings/${enc(peer)}/answer`, { ok }));
    } catch (err) {
      this.draw({ peer, state: "failed", why: err.message });
    }
    if (!ok) this.dialog.close();
    this.app.trusted.load();
  }
}
