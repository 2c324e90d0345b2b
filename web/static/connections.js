// The connections page: a store's outbound WebSocket connections
// (docs/compatibility.md §6.3), its MQTT sinks and its MQTT subscriptions
// (README "## MQTT"), each table refreshed every 2 s, each with its create
// form and delete buttons. Passwords go to the API and are never shown.
import { api, el, storeName, storePath } from './app.js';

const name = storeName('connections-page');

/** One kind of link: its table, status line, API path and row cells. */
function section({ table, status, path, list, noun, cells }) {
  return {
    tbody: document.querySelector('#' + table + ' tbody'),
    statusLine: document.getElementById(status),
    base: storePath(name, path),
    list,
    noun,
    cells,
    gone: false,
    count: null,
    // The refresh's own trouble, shown apart from `note`.
    problem: null,
    note: null,
  };
}

const sections = {
  ws: section({
    table: 'connections', status: 'conn-status', path: '/ws/connections', list: 'connections', noun: 'connection',
    cells: (c) => [el('td', c.id), el('td', c.mode), el('td', c.url), statusCell(c),
      el('td', c.last_timestamp ?? '', 'num'), el('td', c.messages_sent ?? 0, 'num'),
      el('td', c.messages_received ?? 0, 'num'), el('td', c.errors ?? 0, 'num'), el('td', c.last_error ?? '', 'last-error')],
  }),
  sink: section({
    table: 'mqtt-sinks', status: 'sink-status', path: '/mqtt/connections', list: 'connections', noun: 'MQTT sink',
    cells: (c) => [el('td', c.id), el('td', c.broker_url), el('td', c.topic), statusCell(c),
      el('td', c.last_timestamp ?? '', 'num'), el('td', c.messages_sent ?? 0, 'num'),
      el('td', c.errors ?? 0, 'num'), el('td', c.last_error ?? '', 'last-error')],
  }),
  sub: section({
    table: 'mqtt-subs', status: 'sub-status', path: '/mqtt/subscriptions', list: 'subscriptions', noun: 'MQTT subscription',
    cells: (c) => [el('td', c.id), el('td', c.broker_url), el('td', (c.topics || []).join('\n'), 'lines'), statusCell(c),
      el('td', c.messages_received ?? 0, 'num'), el('td', c.messages_stored ?? 0, 'num'),
      el('td', c.errors ?? 0, 'num'), el('td', c.last_error ?? '', 'last-error')],
  }),
};

function statusCell(c) {
  const td = el('td', c.status, 'status-' + c.status);
  if (c.connected_since) td.title = 'connected since ' + c.connected_since;
  return td;
}

function show(s, list) {
  s.tbody.replaceChildren(...list.map((c) => {
    const tr = document.createElement('tr');
    tr.dataset.id = c.id;
    const del = el('button', 'Delete');
    del.type = 'button';
    del.className = 'danger';
    del.setAttribute('aria-label', 'Delete ' + s.noun + ' ' + c.id);
    del.addEventListener('click', () => remove(s, c.id));
    const action = document.createElement('td');
    action.append(del);
    tr.append(...s.cells(c), action);
    return tr;
  }));
}

/** The status line: the count of the last refresh (or why it failed),
 * then what the last action answered. The action's note stays until the
 * next action: a refresh, failed or not, never replaces it (it used to:
 * "Connection X created." was gone after one failed refresh). The line is
 * written only when its text changes, so that a screen reader does not
 * hear it again every 2 s. */
function render(s) {
  const head = s.problem !== null ? s.problem : s.count === null ? '' : s.count + ' ' + s.noun + '(s)';
  const note = s.note ? s.note.text : '';
  const cls = (s.note && !s.note.ok) || s.problem !== null ? 'error' : '';
  const text = head && note ? head + ' · ' + note : head || note;
  if (s.statusLine.className !== cls) s.statusLine.className = cls;
  if (s.statusLine.textContent !== text) s.statusLine.textContent = text;
}

function say(s, ok, text) {
  s.note = { ok, text };
  render(s);
}

async function refreshOne(s) {
  if (s.gone) return;
  const r = await api('GET', s.base);
  if (r.ok) {
    const list = (r.body && r.body[s.list]) || [];
    show(s, list);
    s.count = list.length;
    s.problem = null;
    render(s);
  } else {
    // A server built without this API: say so once and stop asking.
    s.gone = r.status === 404 && r.error === 'not found';
    s.count = null;
    s.problem = s.gone ? 'Not available in this server build.' : 'Error: ' + r.error;
    render(s);
  }
}

function refresh() {
  return Promise.all(Object.values(sections).map(refreshOne));
}

async function remove(s, id) {
  const r = await api('DELETE', s.base + '/' + encodeURIComponent(id));
  say(s, r.ok, r.ok ? s.noun[0].toUpperCase() + s.noun.slice(1) + ' ' + id + ' deleted.' : 'Error: ' + r.error);
  refreshOne(s);
}

/** Creates through `s`'s API; the body is JSON text (nanosecond digits
 * go in as typed). The form is cleared (the password with it) on success. */
async function create(s, form, json) {
  const r = await api('POST', s.base, json);
  say(s, r.ok, r.ok ? s.noun[0].toUpperCase() + s.noun.slice(1) + ' ' + r.body.id + ' created.' : 'Refused: ' + r.error);
  if (r.ok) {
    form.reset();
    form.dispatchEvent(new Event('change'));
  }
  refreshOne(s);
}

/** The trimmed text fields of a form that are not empty (empty ones are
 * left to the API's defaults). */
function strings(f, names) {
  const out = {};
  for (const n of names) {
    const v = String(f.get(n) ?? '').trim();
    if (v) out[n] = v;
  }
  return out;
}

/** A whole number as a JSON number, anything else as the text typed (the
 * API then names the field it refuses). */
function integer(v) {
  const t = String(v ?? '').trim();
  return /^-?\d{1,15}$/.test(t) ? Number(t) : t;
}

document.getElementById('conn-create').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const s = sections.ws;
  const f = new FormData(ev.target);
  const headers = {};
  for (const line of String(f.get('headers') || '').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  const from = String(f.get('from') || '0').trim();
  if (!/^\d+$/.test(from)) {
    say(s, false, 'From is a whole number of nanoseconds (0 = from the oldest).');
    return;
  }
  const body = {
    mode: f.get('mode'),
    url: String(f.get('url')).trim(),
    from: 0,
    format: f.get('format'),
    headers,
  };
  const filter = String(f.get('filter') || '');
  if (filter) {
    body.filter = filter;
    body.filter_ignore_case = !!f.get('filter_ignore_case');
  }
  // Nanoseconds exceed a double's exact range: the digits go in as typed.
  create(s, ev.target, JSON.stringify(body).replace('"from":0', '"from":' + from));
});

document.getElementById('sink-create').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const s = sections.sink;
  const f = new FormData(ev.target);
  const from = String(f.get('from') || '0').trim();
  if (!/^(-1|\d{1,19})$/.test(from)) {
    say(s, false, 'From is 0 (the oldest), -1 (now) or a whole number of nanoseconds.');
    return;
  }
  const body = {
    broker_url: String(f.get('broker_url')).trim(),
    topic: String(f.get('topic')),
    from: 0,
    include_timestamp: !!f.get('include_timestamp'),
    qos: Number(f.get('qos')),
    retain: !!f.get('retain'),
    cursor_persist_interval: integer(f.get('cursor_persist_interval') || '0'),
    ...strings(f, ['client_id', 'username', 'ca_file']),
  };
  const password = String(f.get('password') || '');
  if (password) body.password = password;
  create(s, ev.target, JSON.stringify(body).replace('"from":0', '"from":' + from));
});

const subForm = document.getElementById('sub-create');
const tsField = document.getElementById('m-tsfield');
const tsUnit = document.getElementById('m-tsunit');
// The field and its unit mean something only with a field timestamp.
subForm.addEventListener('change', () => {
  const off = document.getElementById('m-ts').value !== 'field';
  tsField.disabled = off;
  tsUnit.disabled = off;
  tsField.required = !off;
});

subForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const s = sections.sub;
  const f = new FormData(ev.target);
  const body = {
    broker_url: String(f.get('broker_url')).trim(),
    topics: String(f.get('topics') || '').split('\n').map((t) => t.trim()).filter((t) => t),
    qos: Number(f.get('qos')),
    clean_session: !!f.get('clean_session'),
    timestamp: f.get('timestamp'),
    include_topic: !!f.get('include_topic'),
    ...strings(f, ['client_id', 'username', 'ca_file']),
  };
  if (body.timestamp === 'field') {
    Object.assign(body, strings(f, ['timestamp_field']));
    body.timestamp_unit = f.get('timestamp_unit');
  }
  const password = String(f.get('password') || '');
  if (password) body.password = password;
  create(s, ev.target, JSON.stringify(body));
});

setInterval(refresh, 2000);
refresh();
