// File lists: the share, the inbox (searchable, paged) and a peer's share (browse and pull).
import { get, post, enc } from "./api.js";
import { $, h, setText, KeyedList, Pager, size, toast } from "./dom.js";

const PAGE = 50;

export class FileList {
  /** prefix: the ids of its elements ("inbox" -> #inbox, #inbox-search, ...). */
  constructor(app, prefix, path, extra) {
    this.app = app;
    this.prefix = prefix;
    this.path = path;
    this.extra = extra; // (file) -> a button for the row, or null
    this.files = [];
    this.byName = new Map();
    this.query = "";
    this.reorder = true;
    this.loading = null;
    this.again = false;
    this.list = new KeyedList($(prefix), (k) => this.create(k), (k, el) => this.update(k, el));
    this.pager = new Pager($(`${prefix}-pager`), PAGE, () => this.resort());
    const search = $(`${prefix}-search`);
    if (search) {
      search.addEventListener("input", (e) => {
        this.query = e.target.value.trim().toLowerCase();
        this.pager.page = 0;
        this.resort();
      });
    }
  }

  resort() {
    this.reorder = true;
    this.app.schedule();
  }

  /** Read the list again (at most one request at a time; one more if asked meanwhile). */
  async load() {
    if (this.loading) {
      this.again = true;
      return this.loading;
    }
    this.loading = (async () => {
      try {
        this.set(await get(this.path));
      } catch (err) {
        if (err.status !== 401) toast(`${this.prefix}: ${err.message}`, true);
      } finally {
        this.loading = null;
        if (this.again) {
          this.again = false;
          this.load();
        }
      }
    })();
    return this.loading;
  }

  set(files) {
    this.files = files || [];
    const old = this.byName;
    this.byName = new Map(this.files.map((f) => [f.name, f]));
    for (const [name, f] of this.byName) {
      const was = old.get(name);
      if (!was || was.sha256 !== f.sha256 || was.size !== f.size) this.list.mark(name);
    }
    this.resort();
  }

  render() {
    if (!this.reorder) return;
    this.reorder = false;
    const q = this.query;
    const names = this.files.filter((f) => !q || String(f.name).toLowerCase().includes(q)).map((f) => f.name);
    this.list.show(this.pager.slice(names));
    setText($(`${this.prefix}-count`) || document.createElement("span"), this.files.length ? `(${this.files.length})` : "");
    const empty = $(`${this.prefix}-empty`);
    if (empty) empty.hidden = this.files.length > 0;
  }

  create(name) {
    return h("li", { class: "row file", dataset: { name } },
      h("div", { class: "title" }, h("span", { class: "name" })),
      h("div", { class: "actions" }),
      h("div", { class: "sub" }));
  }

  update(name, li) {
    const f = this.byName.get(name);
    if (!f) return;
    const [title, actions, sub] = li.children;
    setText(title.firstChild, f.name);
    title.firstChild.title = f.name;
    const parts = [size(f.size)];
    if (f.mime) parts.push(f.mime);
    parts.push(f.sha256 ? `sha256 ${String(f.sha256).slice(0, 16)}…` : "hashing…");
    if (f.mtime) parts.push(new Date(f.mtime * 1000).toLocaleString());
    setText(sub, parts.join(" · "));
    if (this.extra && !actions.firstChild) {
      const b = this.extra(f);
      if (b) actions.append(b);
    }
  }
}

/** A peer's share: GET /api/peers/{peer}/files (the node asks the peer), pull per file. */
export class Browse extends FileList {
  constructor(app) {
    super(app, "browse", "", (f) => h("button", {
      type: "button", class: "small pull", "aria-label": `Pull ${f.name}`,
      onclick: () => this.pull(f),
    }, "Pull"));
    this.peer = null;
    $("browse-close").addEventListener("click", () => this.close());
  }

  async open(node) {
    this.peer = node;
    this.path = `/api/peers/${enc(node)}/files`;
    this.list.show([]);
    this.files = [];
    this.byName = new Map();
    $("browse-card").hidden = false;
    setText($("browse-peer"), this.app.peers.label(node));
    setText($("browse-status"), "asking the peer…");
    $("browse-search").value = "";
    this.query = "";
    $("browse-card").scrollIntoView({ block: "nearest" });
    try {
      const files = await get(this.path);
      if (this.peer !== node) return;
      this.set(files);
      setText($("browse-status"), files.length ? `${files.length} files` : "nothing shared");
    } catch (err) {
      if (this.peer === node) setText($("browse-status"), `could not list: ${err.message}`);
    }
    $("browse-search").focus();
  }

  close() {
    this.peer = null;
    $("browse-card").hidden = true;
  }

  async pull(f) {
    try {
      const t = await post("/api/pull", { peer: this.peer, name: f.name });
      this.app.transfers.add(t);
      toast(`Pulling ${f.name}`);
    } catch (err) {
      toast(`Pull failed: ${err.message}`, true);
    }
  }
}
