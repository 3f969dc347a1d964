// The console's one way to call sessiond: fetch with the stored key, JSON in and out, and the
// API's one error shape ({"type": "error", "error": {"type", "message"}}) raised as ApiError.

const KEY = "sessiond.api_key";

export class ApiError extends Error {
  constructor(status, type, message, body) {
    super(message);
    this.status = status;
    this.type = type;
    this.body = body;
  }
}

export function storedKey() {
  try {
    return localStorage.getItem(KEY) || "";
  } catch {
    return "";
  }
}

export function keepKey(key) {
  localStorage.setItem(KEY, key);
}

export function forgetKey() {
  localStorage.removeItem(KEY);
}

function headers(extra = {}) {
  const out = { ...extra };
  const key = storedKey();
  if (key) out.Authorization = `Bearer ${key}`;
  return out;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const error = body && body.error;
  const type = (error && error.type) || `http_${response.status}`;
  const message = (error && error.message) || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, type, message, body);
}

// A JSON call: the decoded answer, null for a 204, an ApiError otherwise.
export async function call(method, path, body = undefined, extra = {}) {
  const init = { method, headers: headers(extra) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", `the server could not be reached (${err.message})`, null);
  }
  if (!response.ok) throw await failure(response);
  if (response.status === 204) return null;
  return response.json();
}

// A call whose answer is a file (an export): a Blob and the name the server gives it.
export async function download(method, path, body = undefined) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const disposition = response.headers.get("Content-Disposition") || "";
  const named = /filename="([^"]+)"/.exec(disposition);
  return { blob: await response.blob(), name: named ? named[1] : "export" };
}

// An upload (an import): the bytes of a file as they are, with its type.
export async function upload(path, file) {
  const type = file.name.endsWith(".zip") ? "application/zip" : "application/json";
  const response = await fetch(path, {
    method: "POST",
    headers: headers({ "Content-Type": type }),
    body: file,
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// Every page of a list, following next_cursor.
export async function all(path, limit = 100) {
  const items = [];
  let cursor = null;
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await call(
      "GET",
      `${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
    );
    items.push(...page.data);
    if (!page.next_cursor) return items;
    cursor = page.next_cursor;
  }
}
