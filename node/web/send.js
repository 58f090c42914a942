// Send: files or a folder, picked or dropped. The browser uploads each file to this node
// (POST /api/uploads, streamed to the share's hidden staging directory), then asks the node to
// push it (POST /api/push with the staged path and the file's name, folders kept as "dir/a").
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
    for (const [file, name] of files) {
      const row = h("li", { class: "row upload", dataset: { name } },
        h("div", { class: "title" }, h("span", { class: "dir" }, `↑ to ${this.app.peers.label(peer)}`),
          h("span", { class: "name" }, name)),
        h("div", { class: "actions" }, h("span", { class: "badge" }, "waiting")),
        h("div", { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
          "aria-label": `Uploading ${name}` }, h("div")),
        h("div", { class: "sub" }, `${size(file.size)} · waiting to upload to this node`));
      $("uploads").append(row);
      this.queue.push({ file, name, peer, row });
    }
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

  async one({ file, name, peer, row }) {
    const [, actions, bar, sub] = row.children;
    setText(actions.firstChild, "uploading");
    let last = 0;
    try {
      if (file.size === 0) throw new Error("empty files are not sent");
      const staged = await upload(file, name, (loaded, total) => {
        const now = performance.now();
        if (now - last < 100 && loaded < total) return;
        last = now;
        const f = total ? loaded / total : 0;
        bar.firstChild.style.transform = `scaleX(${f})`;
        bar.setAttribute("aria-valuenow", String(Math.floor(f * 100)));
        setText(sub, `uploading to this node: ${Math.floor(f * 100)}% of ${size(total)}`);
      });
      const t = await post("/api/push", { peer, path: staged.path, name });
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
