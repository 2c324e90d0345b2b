// Shared helpers of the console pages, and the behaviour every page has
// (copy buttons, typed confirmations). Stored values are only ever put
// into the page with textContent: never innerHTML.

const meta = document.querySelector('meta[name="csrf-token"]');
/** The session's CSRF token, sent with every state-changing API call. */
export const csrf = meta ? meta.content : '';

/** Timestamps are nanoseconds, beyond a double's exact range: keep the
 * ones of the API's object framing as strings before parsing. */
export function parseJSON(text) {
  return JSON.parse(text
    .replace(/("timestamp":)(-?\d+)(,"block_num":)/g, '$1"$2"$3')
    .replace(/("(?:last_timestamp|from)":)(-?\d{16,})\b/g, '$1"$2"'));
}

/** Calls the REST API with the session cookie; the CSRF header on
 * anything but GET. Resolves to {ok, status, body, error}. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  let payload;
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    // A string is JSON already (e.g. with a nanosecond integer in it).
    payload = typeof body === 'string' ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, { method, headers, body: payload, credentials: 'same-origin' });
  } catch (e) {
    return { ok: false, status: 0, body: null, error: 'network error: ' + e.message };
  }
  const text = await res.text();
  let parsed = null;
  try { parsed = text ? parseJSON(text) : null; } catch { parsed = null; }
  const error = res.ok ? null : (parsed && parsed.error) || res.statusText || ('HTTP ' + res.status);
  return { ok: res.ok, status: res.status, body: parsed, error };
}

/** An element with text content (never parsed as HTML). */
export function el(tag, text, className) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (className) e.className = className;
  return e;
}

/** RFC 3339 time (milliseconds) of a nanosecond timestamp string. */
export function tsTime(ts) {
  try {
    return new Date(Number(BigInt(ts) / 1000000n)).toISOString();
  } catch {
    return '';
  }
}

/** Stored data as one line of text: strings as they are, others as JSON. */
export function dataText(d) {
  return typeof d === 'string' ? d : JSON.stringify(d);
}

/** The store a page is about. */
export function storeName(id) {
  const root = document.getElementById(id);
  return root ? root.dataset.store : '';
}

export function storePath(name, rest) {
  return '/api/stores/' + encodeURIComponent(name) + rest;
}

function wireCopyButtons() {
  for (const b of document.querySelectorAll('button[data-copy]')) {
    b.addEventListener('click', async () => {
      const src = document.getElementById(b.dataset.copy);
      const out = b.parentElement.querySelector('.copied');
      try {
        await navigator.clipboard.writeText(src.value);
        if (out) out.textContent = 'Copied.';
      } catch {
        src.select();
        if (out) out.textContent = 'Select and copy the key (Ctrl+C).';
      }
    });
  }
}

// A reset/delete button is enabled only once the store's name is typed.
function wireConfirmations() {
  for (const input of document.querySelectorAll('input[data-expect]')) {
    const button = input.form.querySelector('button[type=submit]');
    const update = () => { button.disabled = input.value.trim() !== input.dataset.expect; };
    input.addEventListener('input', update);
    update();
  }
}

wireCopyButtons();
wireConfirmations();
