// Send: files or a folder, picked or dropped. The browser uploads each file to this node
// (POST /api/uploads, streamed to the share's hidden staging directory), then asks the node to
// push it (POST /api/push with the staged path and the file's name, folders kept as "dir/a").
// Several files of one pick or drop are one send: uploaded into one staging directory
// (?batch=new, then ?batch=ID), then pushed together as one batch (POST /api/push with the
// top-level paths: their original names, a folder's tree kept): one accept decision at the
// peer, one row here. A single file stays a plain push.
import { post, upload } from "./api.js";
import { $, h, setText, size, toast } from "./dom.js";

export class Send {
  constructor(app) {
    this.app = app;
    this.queue = [];
    this.running = false;
    const drop = $("drop");
    drop.addEventListener("dragover", (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (e) => {
      e.preventDefault();
      drop.classList.remove("over");
      this.dropped(e.dataTransfer);
    });
    drop.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        $("pick-files").click();
      }
    });
    for (const id of ["pick-files", "pick-folder"]) {
      $(id).addEventListener("change", (e) => {
        const files = [...e.target.files].map((f) => [f, f.webkitRelativePath || f.name]);
        this.start(files);
        e.target.value = "";
      });
    }
  }

  choose(node) {
    $("send-peer").value = node;
    $("drop").focus();
  }

  async dropped(dt) {
    const files = [];
    const entries = [];
    for (const item of dt.items || []) {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry);
      else if (item.kind === "file") {
        const f = item.getAsFile();
        if (f) files.push([f, f.name]);
      }
    }
    if (!entries.length && !files.length) for (const f of dt.files || []) files.push([f, f.name]);
    for (const entry of entries) await walk(entry, "", files);
    this.start(files);
  }

  start(files) {
    const peer = $("send-peer").value;
    if (!peer) {
      toast("Choose a peer to send to first.", true);
      $("send-peer").focus();
      return;
    }
    if (!files.length) return;
    files = unique(files);
    const total = files.reduce((s, [f]) => s + f.size, 0);
    const name = files.length === 1 ? files[0][1] : `${files.length} files`;
    const row = h("li", { class: "row upload", dataset: { name } },
      h("div", { class: "title" }, h("span", { class: "dir" }, `↑ to ${this.app.peers.label(peer)}`),
        h("span", { class: "name" }, name)),
      h("div", { class: "actions" }, h("span", { class: "badge" }, "waiting")),
      h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
        "aria-label": `Uploading ${name}` }, h("div")),
      h("div", { class: "sub" }, `${size(total)} · waiting to upload to this node`));
    $("uploads").append(row);
    this.queue.push({ files, name, total, peer, row });
    this.run();
  }

  async run() {
    if (this.running) return;
    this.running = true;
    while (this.queue.length) {
      const job = this.queue.shift();
      await this.one(job);
    }
    this.running = false;
  }

  async one({ files, name, total, peer, row }) {
    const [, actions, bar, sub] = row.children;
    setText(actions.firstChild, "uploading");
    let last = 0;
    let before = 0; // bytes of the send's files already uploaded
    const progress = (loaded) => {
      const now = performance.now();
      const all = before + loaded;
      if (now - last < 100 && all < total) return;
      last = now;
      const f = total ? Math.min(1, all / total) : 1;
      bar.firstChild.style.transform = `scaleX(${f})`;
      bar.setAttribute("aria-valuenow", String(Math.floor(f * 100)));
      setText(sub, `uploading to this node: ${Math.floor(f * 100)}% of ${size(total)}`);
    };
    try {
      let t;
      if (files.length === 1) {
        const [file, fname] = files[0];
        if (file.size === 0) throw new Error("empty files are not sent");
        const staged = await upload(file, fname, progress);
        t = await post("/api/push", { peer, path: staged.path, name: fname });
      } else {
        let batch = "new";
        const roots = [];
        for (const [file, fname] of files) {
          const staged = await upload(file, fname, progress, batch);
          batch = staged.batch;
          if (!roots.includes(staged.root)) roots.push(staged.root);
          before += file.size;
        }
        t = await post("/api/push", { peer, paths: roots });
      }
      this.app.transfers.add(t);
      row.remove(); // the transfer's own row takes over
    } catch (err) {
      setText(actions.firstChild, "failed");
      actions.firstChild.className = "badge bad";
      setText(sub, `not sent: ${err.message}`);
      row.dataset.state = "failed";
      const close = h("button", { type: "button", class: "small", "aria-label": `Dismiss ${name}`, onclick: () => row.remove() }, "Dismiss");
      actions.append(close);
    }
  }
}

/** The files of one send with distinct names: a second "a.txt" (two folders' files dropped
 * loose) becomes "a (2).txt", as a receiver numbers a taken name. */
function unique(files) {
  const seen = new Set();
  return files.map(([file, name]) => {
    let n = name;
    for (let i = 2; seen.has(n); i++) {
      const slash = name.lastIndexOf("/") + 1;
      const dot = name.lastIndexOf(".");
      const cut = dot > slash ? dot : name.length;
      n = `${name.slice(0, cut)} (${i})${name.slice(cut)}`;
    }
    seen.add(n);
    return [file, n];
  });
}

/** Files under a dropped entry (a folder: recursively), as [file, "folder/sub/name"]. */
async function walk(entry, prefix, out) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    out.push([file, prefix + entry.name]);
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) await walk(child, `${prefix}${entry.name}/`, out);
  }
}
