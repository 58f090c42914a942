// The mole dashboard: login, then live state from GET /api/events (no polling). Events change
// the model at once; the DOM follows once per animation frame (every list keyed by id, only
// the rows that changed touched), so hundreds of transfers and peers do not freeze the page.
import { api, get, post, setUnauthorizedHandler, Events } from "./api.js";
import { $, h, setText, toast } from "./dom.js";
import { Transfers } from "./transfers.js";
import { Peers } from "./peers.js";
import { Offers, Pairing, Trusted } from "./trust.js";
import { FileList, Browse } from "./files.js";
import { Send } from "./send.js";

const FRAME_GAP = 100; // ms between two DOM updates at most once per frame (see schedule)

class App {
  constructor() {
    this.frame = 0;
    this.timer = 0;
    this.lastFlush = -Infinity;
    this.loaded = false;
    this.buffer = [];
    this.running = false;
    this.stats = { events: 0, frames: 0, applied: 0, renderMs: 0, renderMax: 0 };
    window.moleStats = this.stats; // read by the tests and bench/dashboard.py
    this.transfers = new Transfers(this);
    this.peers = new Peers(this);
    this.offers = new Offers(this);
    this.trusted = new Trusted(this);
    this.pairing = new Pairing(this);
    this.inbox = new FileList(this, "inbox", "/api/inbox");
    this.share = new FileList(this, "share", "/api/files");
    this.browse = new Browse(this);
    this.send = new Send(this);
    this.events = new Events((n, d) => this.onEvent(n, d), (s) => this.onStatus(s));
    setUnauthorizedHandler(() => this.loggedOut("Your session ended: log in again."));
    $("login-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.login();
    });
    $("logout").addEventListener("click", () => this.logout());
    $("share-refresh").addEventListener("click", () => this.share.load());
    $("copy-id").addEventListener("click", () => this.copyId());
    setInterval(() => this.running && this.peers.tick(), 10000);
  }

  /** Draw what changed at the next animation frame, at most one frame per FRAME_GAP ms: a
   * burst of events (hundreds of progress lines a second) costs one DOM update. */
  schedule() {
    if (this.frame || this.timer) return;
    const wait = this.lastFlush + FRAME_GAP - performance.now();
    if (wait > 0) {
      this.timer = setTimeout(() => {
        this.timer = 0;
        this.frame = requestAnimationFrame(() => this.flush());
      }, wait);
    } else {
      this.frame = requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.frame = 0;
    const start = performance.now();
    this.lastFlush = start;
    this.transfers.render();
    this.peers.render();
    this.inbox.render();
    this.share.render();
    this.browse.render();
    this.stats.frames += 1;
    const took = performance.now() - start;
    this.stats.renderMs += took;
    this.stats.renderMax = Math.max(this.stats.renderMax, took);
    if (this.loaded && !this.ready) {
      this.ready = true;
      performance.mark("mole-ready"); // the state drawn: bench/dashboard.py reads it
    }
  }

  // -- session ---------------------------------------------------------------------------------
  async boot() {
    try {
      await get("/api/node");
      this.start();
    } catch (err) {
      this.loggedOut(err.status === 401 ? "" : `The node does not answer: ${err.message}`);
    }
  }

  async login() {
    const input = $("token");
    const error = $("login-error");
    setText(error, "");
    $("login-submit").disabled = true;
    try {
      await post("/api/session", { token: input.value.trim() });
      input.value = "";
      this.start();
    } catch (err) {
      setText(error, err.status === 401
        ? "Wrong token: the node refused it. Check it with `mole token` on the node's machine."
        : `Could not log in: ${err.message}`);
      input.focus();
      input.select();
    } finally {
      $("login-submit").disabled = false;
    }
  }

  async logout() {
    try {
      await api("DELETE", "/api/session");
    } catch {
      /* logged out either way */
    }
    this.loggedOut("");
  }

  loggedOut(message) {
    this.running = false;
    this.events.close();
    this.status("off");
    $("app-view").hidden = true;
    $("whoami").hidden = true;
    $("logout").hidden = true;
    $("login-view").hidden = false;
    setText($("login-error"), message);
    $("token").focus();
  }

  start() {
    this.running = true;
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("logout").hidden = false;
    this.events.open(); // first: what happens while we read the state is not missed
    this.reload();
  }

  // -- state -----------------------------------------------------------------------------------
  async reload() {
    this.loaded = false;
    try {
      const [node, peers, transfers] = await Promise.all([
        get("/api/node"), get("/api/peers"), get("/api/transfers"),
      ]);
      this.showNode(node);
      this.peers.load(peers);
      this.transfers.load(transfers);
    } catch (err) {
      if (err.status !== 401) toast(`Could not read the node's state: ${err.message}`, true);
      return;
    }
    this.loaded = true;
    const buffered = this.buffer;
    this.buffer = [];
    for (const [name, data] of buffered) this.apply(name, data);
    this.inbox.load();
    this.share.load();
    this.offers.load();
    this.trusted.load();
    this.pairing.refresh();
  }

  showNode(n) {
    this.node = n;
    document.title = `mole · ${n.name}`;
    setText($("node-name"), n.name);
    // The header has room for the id's first groups; "This node" and Copy give all of it.
    setText($("node-id"), n.node_human ? `${n.node_human.slice(0, 15)}…` : String(n.node).slice(0, 8));
    $("node-id").title = n.node;
    $("whoami").hidden = false;
    const facts = [
      ["Name", n.name],
      ["Node id", n.node_human ? `${n.node_human} (${n.node})` : n.node],
      ["Groups", (n.groups || []).join(", ") || "none"],
      ["Dashboard", location.origin],
      ["Transfers on", `TCP port ${n.tcp_port}`],
      ["Discovery", n.discovery_port ? `UDP port ${n.discovery_port}` : "off"],
      ["Share", n.share],
      ["Inbox", n.inbox],
      ["Version", n.version],
    ];
    $("node-facts").replaceChildren(...facts.flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]));
    $("node-facts").children[3].id = "node-human"; // the "Node id" value: selected when copying
  }

  // -- events ----------------------------------------------------------------------------------
  onEvent(name, data) {
    this.stats.events += 1;
    if (name === "reset") {
      this.reload(); // the stream started over: what we hold may be stale
      return;
    }
    if (!this.loaded) {
      this.buffer.push([name, data]);
      return;
    }
    this.apply(name, data);
  }

  apply(name, d) {
    this.stats.applied += 1;
    if (this.transfers.apply(name, d)) {
      if (name === "transfer_done" && d.role === "receive") this.inbox.load();
      return;
    }
    if (this.peers.apply(name, d)) return;
    if (name === "peer_lines_suppressed") {
      get("/api/peers").then((p) => this.peers.load(p), () => {});
    } else if (name === "warning") {
      toast(`Node: ${d.message}`, true);
    } else if (name === "shutdown") {
      toast("The node is shutting down.", true);
    } else if (name === "offer_pending") {
      this.offers.load();
    } else if (name === "offer_decided") {
      this.offers.drop(d.offer);
    } else if (name === "pairing") {
      this.pairing.refresh();
      if (d.state === "paired") this.trusted.load();
    }
  }

  /** Copy this node's id (human form) for the other user's `mole trust ID`. */
  async copyId() {
    const text = (this.node && (this.node.node_human || this.node.node)) || "";
    try {
      await navigator.clipboard.writeText(text);
      toast("Node id copied.");
    } catch {
      // No clipboard (a plain-HTTP page on another host is not a secure context): select it.
      const range = document.createRange();
      range.selectNodeContents($("node-human"));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      toast("Select and copy the id: the browser refused the clipboard.");
    }
  }

  onStatus(state) {
    if (state === "closed" && this.running) {
      // The stream was refused (a 401 ends an EventSource for good) or the node went away.
      this.status("reconnecting");
      get("/api/node").then(() => {
        if (this.running) setTimeout(() => this.running && this.start(), 1000);
      }, (err) => {
        if (err.status !== 401 && this.running) setTimeout(() => this.onStatus("closed"), 2000);
      });
      return;
    }
    this.status(state);
  }

  status(state) {
    const el = $("live");
    el.dataset.state = state;
    setText(el, { live: "live", reconnecting: "reconnecting…", closed: "offline", off: "offline" }[state] || state);
  }
}

const app = new App();
app.boot();
