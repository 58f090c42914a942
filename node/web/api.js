// The node's control API from the page: same origin, the session cookie (HttpOnly: this code
// never sees it), JSON bodies with Content-Type: application/json on every state change.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code;
  }
}

let onUnauthorized = () => {};

export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (method !== "GET") {
    init.headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "unreachable", `the node does not answer (${err.message})`);
  }
  let data = null;
  const text = await resp.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!resp.ok) {
    if (resp.status === 401 && path !== "/api/session") onUnauthorized();
    throw new ApiError(resp.status, data && data.error, data && data.message);
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);

export function enc(segment) {
  return encodeURIComponent(segment);
}

/**
 * Upload one file to the node's staging area (POST /api/uploads?name=...), streamed by the
 * browser; progress(loaded, total) as it goes. XMLHttpRequest: fetch() has no upload progress.
 * `batch`: one of several files of a send ("new" for the first, then the `batch` its answer
 * gave). Resolves to the node's answer {id, name, size, path[, batch, root]}.
 */
export function upload(file, name, progress, batch) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const extra = batch ? `&batch=${enc(batch)}` : "";
    xhr.open("POST", `/api/uploads?name=${enc(name)}${extra}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => progress(e.loaded, e.total || file.size);
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else {
        if (xhr.status === 401) onUnauthorized();
        reject(new ApiError(xhr.status, data && data.error, data && data.message));
      }
    };
    xhr.onerror = () => reject(new ApiError(0, "unreachable", "the upload was cut off"));
    xhr.onabort = () => reject(new ApiError(0, "aborted", "upload cancelled"));
    xhr.send(file);
  });
}

// Every event name the page reacts to (docs/api.md section 2), and the stream's own `reset`.
export const EVENT_NAMES = [
  "listening", "peer_up", "peer_down", "peer_lines_suppressed",
  "transfer_started", "transfer_progress", "transfer_resumed", "transfer_reset",
  "transfer_retry", "transfer_refused", "transfer_done", "transfer_failed",
  "connection_dropped", "connections_dropped", "warning", "shutdown", "reset",
  "offer_pending", "offer_decided", "pairing", "batch_started",
  "batch_progress", "batch_fallback",
];

/**
 * GET /api/events as an EventSource: the browser reconnects by itself with Last-Event-ID, and
 * the node replays what we missed (or says `reset`). handler(name, data) per event;
 * status("live" | "reconnecting" | "closed").
 */
export class Events {
  constructor(handler, status) {
    this.handler = handler;
    this.status = status;
    this.source = null;
  }

  open() {
    this.close();
    const source = new EventSource("/api/events");
    this.source = source;
    source.onopen = () => this.status("live");
    source.onerror = () => {
      if (this.source !== source) return;
      this.status(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
    };
    for (const name of EVENT_NAMES) {
      source.addEventListener(name, (e) => {
        let data = null;
        try {
          data = JSON.parse(e.data);
        } catch {
          return;
        }
        this.handler(name, data);
      });
    }
  }

  close() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }
}
