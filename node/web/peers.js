// Peers (online and gone) and the send target list. A row's Pair/Trust/Untrust buttons show
// only on a node with the trust routes (GET /api/trusted answered): node/web/trust.js.
import { $, h, setText, KeyedList, Pager, ago } from "./dom.js";

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
        act("Pair", "pair", (n) => this.app.pairing.start(n)),
        act("Trust", "trust", (n) => this.app.trusted.set(n, true)),
        act("Untrust", "untrust", (n) => this.app.trusted.set(n, false))),
      h("div", { class: "sub" }));
  }

  update(node, li) {
    const p = this.items.get(node);
    if (!p) return;
    const trusted = this.app.trusted.ids.has(node);
    const [title, actions, sub] = li.children;
    const [dot, name, id, badges] = title.children;
    dot.className = p.online ? "dot on" : "dot";
    setText(name, p.name || "(no name)");
    setText(id, p.node_human || node.slice(0, 8));
    id.title = node;
    const tags = [];
    if (trusted) tags.push(h("span", { class: "badge ok" }, "trusted"));
    for (const g of p.groups_proven || []) tags.push(h("span", { class: "badge accent" }, `${g} ✓`));
    if (p.static) tags.push(h("span", { class: "badge" }, "static"));
    badges.replaceChildren(...tags);
    const [sendTo, browse, pair, trust, untrust] = actions.children;
    sendTo.disabled = browse.disabled = !p.online;
    sendTo.setAttribute("aria-label", `Send to ${p.name || node}`);
    pair.setAttribute("aria-label", `Pair with ${p.name || node}`);
    trust.setAttribute("aria-label", `Trust ${p.name || node}`);
    untrust.setAttribute("aria-label", `Stop trusting ${p.name || node}`);
    browse.setAttribute("aria-label", `Browse the files of ${p.name || node}`);
    pair.hidden = !this.trust || trusted || !p.online;
    trust.hidden = !this.trust || trusted;
    untrust.hidden = !this.trust || !trusted;
    // Every address the peer is known by (GET /api/peers `addrs`, in dial order): a count
    // here, each with how it was found in the tooltip.
    const addrs = p.addrs || [];
    const more = addrs.length > 1 ? ` (+${addrs.length - 1} more)` : "";
    const where = p.addr ? `${p.addr}:${p.port}${more}` : "";
    sub.title = addrs.map((a) => `${a.hostport} via ${(a.sources || []).join(", ") || "a dial"}`
      + (a.failures ? ` (${a.failures} failed)` : "")).join("\n");
    const groups = (p.groups || []).length ? `groups ${(p.groups || []).join(", ")}` : "no group";
    const seen = p.online ? `online · seen ${ago(p.last_seen)}` : `offline${p.down_reason ? ` (${p.down_reason})` : ""} · last seen ${ago(p.last_seen)}`;
    setText(sub, [where, groups, seen].filter(Boolean).join(" · "));
    li.dataset.online = String(Boolean(p.online));
  }

  // -- trust: the marks on the rows (node/web/trust.js does the rest) -------------------------
  markTrusted(available) {
    this.trust = available;
    for (const k of this.list.rows.keys()) this.list.mark(k);
    this.app.schedule();
  }

  human(node) {
    const p = this.items.get(node);
    return (p && p.node_human) || node;
  }
}
