// The only way the page talks to the server: /v1 with the key from this tab's sessionStorage.

const KEY = "tunewise.apiKey";

export const key = {
  get: () => sessionStorage.getItem(KEY),
  set: (value) => sessionStorage.setItem(KEY, value),
  clear: () => sessionStorage.removeItem(KEY),
};

export class ApiError extends Error {
  constructor(status, body, fallback) {
    const err = body && body.error ? body.error : null;
    super(err && err.message ? err.message : fallback || `HTTP ${status}`);
    this.status = status;
    this.code = err ? err.code : null;
    this.param = err ? err.param : null;
    this.body = body;
  }
}

// A 401 anywhere means the key is wrong or was revoked: the app listens and asks for a key again.
function unauthorized(error) {
  window.dispatchEvent(new CustomEvent("tunewise:unauthorized", { detail: error }));
}

export function url(path, query) {
  const u = new URL(`/v1${path}`, window.location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== "") u.searchParams.set(k, String(v));
  }
  return u;
}

function parse(text) {
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

export async function api(path, { method = "GET", json, body, query, headers = {} } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${key.get() || ""}`, ...headers } };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (body !== undefined) {
    init.body = body;
  }
  let res;
  try {
    res = await fetch(url(path, query), init);
  } catch (e) {
    throw new ApiError(0, null, `The server did not answer (${e.message}). Is \`tunewise serve\` running?`);
  }
  const text = await res.text();
  const data = parse(text);
  if (!res.ok) {
    const error = new ApiError(res.status, data, text.slice(0, 200));
    if (res.status === 401) unauthorized(error);
    throw error;
  }
  return data;
}

// Every item of a list endpoint, following `after` cursors (OpenAI's list envelope).
export async function listAll(path, query = {}, max = 2000) {
  const out = [];
  let after;
  for (;;) {
    const page = await api(path, { query: { ...query, after } });
    out.push(...page.data);
    if (!page.has_more || !page.data.length || out.length >= max) return out;
    after = page.data[page.data.length - 1].id;
  }
}

// XHR rather than fetch: only XHR reports upload progress.
export function send(path, { method = "POST", body, query, onProgress, contentType } = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url(path, query));
    xhr.setRequestHeader("Authorization", `Bearer ${key.get() || ""}`);
    if (contentType) xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.onprogress = (e) => { if (onProgress && e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      const data = parse(xhr.responseText);
      if (xhr.status >= 200 && xhr.status < 300) return resolve(data);
      const error = new ApiError(xhr.status, data, xhr.responseText.slice(0, 200));
      if (xhr.status === 401) unauthorized(error);
      reject(error);
    };
    xhr.onerror = () => reject(new ApiError(0, null, "The upload failed: the connection to the server broke."));
    xhr.send(body);
  });
}

export function uploadFile(file, onProgress) {
  const form = new FormData();
  form.append("purpose", "fine-tune");
  form.append("file", file, file.name);
  return send("/files", { body: form, onProgress });
}

// Download a file's content (needs the key, so not a plain link).
export async function download(fileId, filename) {
  const res = await fetch(url(`/files/${encodeURIComponent(fileId)}/content`), {
    headers: { Authorization: `Bearer ${key.get() || ""}` },
  });
  if (!res.ok) throw new ApiError(res.status, parse(await res.text()));
  const blob = await res.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = filename || fileId;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}
