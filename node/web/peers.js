// Peers (online and gone), the send target list, and the trust branch's parts: pending offers,
// pairing (with its verification code) and trust. Those last use routes a node may not have
// yet (GET /api/offers, /api/pairings answer 404): their controls then stay hidden.
import { get, post, api, enc } from "./api.js";
import { $, h, setText, KeyedList, Pager, ago, size, toast } from "./dom.js";

const PAGE = 50;

export class Peers {
  constructor(app) {
    this.app = app;
    this.items = new Map(); // node id -> peer (+ online)
    this.reorder = true;
    this.keys = [];
    this.query = "";
    this.trust = false; // the node has the trust routes
    this.selectDirty = true;
    this.list = new KeyedList($("peers"), (k) => this.create(k), (k, el) => this.update(k, el));
    this.pager = new Pager($("peers-pager"), PAGE, () => this.resort());
    $("peers-search").addEventListener("input", (e) => {
      this.query = e.target.value.trim().toLowerCase();
      this.pager.page = 0;
      this.resort();
    });
  }

  resort() {
    this.reorder = true;
    this.app.schedule();
  }

  load(list) {
    for (const p of this.items.values()) p.online = false;
    for (const p of list) this.items.set(p.node, { ...(this.items.get(p.node) || {}), ...p, online: true });
    for (const k of this.list.rows.keys()) this.list.mark(k);
    this.selectDirty = true;
    this.resort();
  }

  apply(name, d) {
    if (name === "peer_up") {
      const old = this.items.get(d.peer);
      const p = {
        ...(old || {}),
        node: d.peer, name: d.peer_name, addr: d.addr, port: d.port, groups: d.groups,
        static: d.static, last_seen: d.ts, online: true,
      };
      this.items.set(d.peer, p);
      if (!old || !old.online || old.name !== p.name) {
        this.reorder = true;
        this.selectDirty = true;
      }
      this.list.mark(d.peer);
    } else if (name === "peer_down") {
      const p = this.items.get(d.peer);
      if (!p) return true;
      p.online = false;
      p.down_reason = d.reason;
      this.reorder = true;
      this.selectDirty = true;
      this.list.mark(d.peer);
    } else {
      return false;
    }
    this.app.schedule();
    return true;
  }

  label(node) {
    const p = this.items.get(node);
    return p ? p.name || node.slice(0, 8) : node.slice(0, 8);
  }

  order() {
    const q = this.query;
    const all = [...this.items.values()].filter((p) => !q
      || String(p.name || "").toLowerCase().includes(q)
      || String(p.node).includes(q)
      || String(p.addr || "").includes(q)
      || (p.groups || []).some((g) => String(g).toLowerCase().includes(q)));
    all.sort((a, b) => (b.online - a.online)
      || String(a.name || "").localeCompare(String(b.name || ""))
      || String(a.node).localeCompare(String(b.node)));
    return all.map((p) => p.node);
  }

  render() {
    if (this.reorder) {
      this.reorder = false;
      this.keys = this.pager.slice(this.order());
      const online = [...this.items.values()].filter((p) => p.online).length;
      setText($("peers-count"), this.items.size ? `(${online} online of ${this.items.size})` : "");
      $("peers-empty").hidden = this.items.size > 0;
    }
    this.list.show(this.keys);
    if (this.selectDirty) this.renderSelect();
  }

  /** Refresh the "last seen" words of the rows shown (local clock only: no request). */
  tick() {
    for (const k of this.keys) this.list.mark(k);
    this.app.schedule();
  }

  renderSelect() {
    this.selectDirty = false;
    const select = $("send-peer");
    const chosen = select.value;
    const online = [...this.items.values()].filter((p) => p.online)
      .sort((a, b) => String(a.name || "").localeCompare(String(b.name || "")));
    const options = [h("option", { value: "" }, online.length ? "choose a peer…" : "no peer online")];
    for (const p of online) {
      options.push(h("option", { value: p.node }, `${p.name || p.node.slice(0, 8)} (${p.node.slice(0, 8)})`));
    }
    select.replaceChildren(...options);
    if (chosen && online.some((p) => p.node === chosen)) select.value = chosen;
    else if (online.length === 1) select.value = online[0].node;
  }

  create(node) {
    const act = (label, cls, fn) => h("button", { type: "button", class: `small ${cls}`, onclick: () => fn(node) }, label);
    return h("li", { class: "row peer", dataset: { node } },
      h("div", { class: "title" }, h("span", { class: "dot", "aria-hidden": "true" }), h("span", { class: "name" }),
        h("span", { class: "mono muted id" }), h("span", { class: "badges" })),
      h("div", { class: "actions" },
        act("Send", "send-to", (n) => this.app.send.choose(n)),
        act("Browse", "browse", (n) => this.app.browse.open(n)),
        act("Pair", "pair", (n) => this.pair(n)),
        act("Trust", "trust", (n) => this.setTrust(n, true)),
        act("Untrust", "untrust", (n) => this.setTrust(n, false))),
      h("div", { class: "sub" }));
  }

  update(node, li) {
    const p = this.items.get(node);
    if (!p) return;
    const [title, actions, sub] = li.children;
    const [dot, name, id, badges] = title.children;
    dot.className = p.online ? "dot on" : "dot";
    setText(name, p.name || "(no name)");
    setText(id, p.id_human || node.slice(0, 8));
    id.title = node;
    const tags = [];
    if (p.trusted) tags.push(h("span", { class: "badge ok" }, "trusted"));
    for (const g of p.groups_proven || []) tags.push(h("span", { class: "badge accent" }, `${g} ✓`));
    if (p.static) tags.push(h("span", { class: "badge" }, "static"));
    badges.replaceChildren(...tags);
    const [sendTo, browse, pair, trust, untrust] = actions.children;
    sendTo.disabled = browse.disabled = !p.online;
    sendTo.setAttribute("aria-label", `Send to ${p.name || node}`);
    browse.setAttribute("aria-label", `Browse the files of ${p.name || node}`);
    pair.hidden = !this.trust || Boolean(p.trusted);
    trust.hidden = !this.trust || Boolean(p.trusted);
    untrust.hidden = !this.trust || !p.trusted;
    const where = p.addr ? `${p.addr}:${p.port}` : "";
    const groups = (p.groups || []).length ? `groups ${(p.groups || []).join(", ")}` : "no group";
    const seen = p.online ? `online · seen ${ago(p.last_seen)}` : `offline${p.down_reason ? ` (${p.down_reason})` : ""} · last seen ${ago(p.last_seen)}`;
    setText(sub, [where, groups, seen].filter(Boolean).join(" · "));
    li.dataset.online = String(Boolean(p.online));
  }

  // -- trust branch: pairing and trust ----------------------------------------------------------
  async pair(node) {
    const dialog = $("pair-dialog");
    setText($("pair-peer"), this.label(node));
    setText($("pair-code"), "…");
    setText($("pair-status"), "asking the peer…");
    dialog.showModal();
    try {
      const r = await post("/api/pair", { peer: node });
      const code = r && (r.code || r.sas || r.verification_code);
      setText($("pair-code"), code || "–");
      setText($("pair-status"), r && r.state ? `state: ${r.state}` : "compare the code on both nodes");
      this.pairing = { node, id: r && r.id };
    } catch (err) {
      setText($("pair-code"), "–");
      setText($("pair-status"), `pairing failed: ${err.message}`);
    }
  }

  async pairingEvent() {
    if (!this.pairing || !$("pair-dialog").open) return;
    try {
      const list = await get("/api/pairings");
      const mine = (list || []).find((x) => x.peer === this.pairing.node || (this.pairing.id && x.id === this.pairing.id));
      if (mine) {
        const code = mine.code || mine.sas || mine.verification_code;
        if (code) setText($("pair-code"), code);
        if (mine.state) setText($("pair-status"), `state: ${mine.state}`);
      }
    } catch {
      /* the dialog keeps what it shows */
    }
  }

  async setTrust(node, on) {
    try {
      if (on) await post("/api/trust", { peer: node });
      else await api("DELETE", `/api/trust/${enc(node)}`);
      const p = this.items.get(node);
      if (p) {
        p.trusted = on;
        this.list.mark(node);
        this.app.schedule();
      }
      toast(on ? `${this.label(node)} is trusted` : `${this.label(node)} is no longer trusted`);
    } catch (err) {
      toast(`Could not change trust: ${err.message}`, true);
    }
  }
}

/** Pending offers (GET /api/offers): files a peer wants to send, waiting for a yes or no. */
export class Offers {
  constructor(app) {
    this.app = app;
    this.available = false;
    this.items = [];
  }

  async load() {
    try {
      this.items = (await get("/api/offers")) || [];
      this.available = true;
    } catch (err) {
      if (err.status !== 404) toast(`Offers: ${err.message}`, true);
      this.available = false;
      this.items = [];
    }
    this.render();
  }

  render() {
    $("offers-card").hidden = !this.available || this.items.length === 0;
    setText($("offers-count"), this.items.length ? `(${this.items.length})` : "");
    const rows = this.items.map((o) => {
      const id = String(o.id);
      const from = o.peer_name || this.app.peers.label(String(o.peer || ""));
      const what = o.name || (o.files ? `${o.files.length} files` : id);
      return h("li", { class: "row offer", dataset: { offer: id } },
        h("div", { class: "title" }, h("span", { class: "dir" }, `↓ from ${from}`), h("span", { class: "name" }, what)),
        h("div", { class: "actions" },
          h("button", { type: "button", class: "small primary accept", "aria-label": `Accept ${what}`, onclick: () => this.answer(id, "accept") }, "Accept"),
          h("button", { type: "button", class: "small danger reject", "aria-label": `Reject ${what}`, onclick: () => this.answer(id, "reject") }, "Reject")),
        h("div", { class: "sub" }, o.size !== undefined ? size(o.size) : ""));
    });
    $("offers").replaceChildren(...rows);
  }

  async answer(id, verb) {
    try {
      await post(`/api/offers/${enc(id)}/${verb}`);
      this.items = this.items.filter((o) => String(o.id) !== id);
      this.render();
    } catch (err) {
      toast(`Could not ${verb} the offer: ${err.message}`, true);
    }
  }
}
