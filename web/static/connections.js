// The connections page: outbound push/pull connections of a store, with
// their status refreshed every 2 s (docs/compatibility.md §6.3).
import { api, el, storeName, storePath } from './app.js';

const name = storeName('connections-page');
const tbody = document.querySelector('#connections tbody');
const statusLine = document.getElementById('conn-status');
const base = storePath(name, '/ws/connections');

function show(list) {
  tbody.replaceChildren(...list.map((c) => {
    const tr = document.createElement('tr');
    tr.dataset.id = c.id;
    const del = el('button', 'Delete');
    del.type = 'button';
    del.className = 'danger';
    del.setAttribute('aria-label', 'Delete connection ' + c.id);
    del.addEventListener('click', () => remove(c.id));
    const action = document.createElement('td');
    action.append(del);
    tr.append(el('td', c.id), el('td', c.mode), el('td', c.url), el('td', c.status, 'status-' + c.status),
      el('td', c.last_timestamp ?? '', 'num'), el('td', c.messages_sent ?? 0, 'num'),
      el('td', c.messages_received ?? 0, 'num'), el('td', c.errors ?? 0, 'num'), el('td', c.last_error ?? ''), action);
    return tr;
  }));
}

let timer = 0;

async function refresh() {
  const r = await api('GET', base);
  if (r.ok) {
    show(r.body.connections || []);
    if (!statusLine.classList.contains('error')) statusLine.textContent = (r.body.connections || []).length + ' connection(s)';
  } else {
    const missing = r.status === 404 && r.error === 'not found';
    statusLine.textContent = missing
      ? 'Outbound connections are not available in this server build.'
      : 'Error: ' + r.error;
    statusLine.className = 'error';
    if (missing) clearInterval(timer);
  }
}

async function remove(id) {
  const r = await api('DELETE', base + '/' + encodeURIComponent(id));
  statusLine.className = r.ok ? '' : 'error';
  statusLine.textContent = r.ok ? 'Connection ' + id + ' deleted.' : 'Error: ' + r.error;
  refresh();
}

document.getElementById('conn-create').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const headers = {};
  for (const line of String(f.get('headers') || '').split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  const from = String(f.get('from') || '0').trim();
  if (!/^\d+$/.test(from)) {
    statusLine.textContent = 'From is a whole number of nanoseconds (0 = from the oldest).';
    statusLine.className = 'error';
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
  const r = await api('POST', base, JSON.stringify(body).replace('"from":0', '"from":' + from));
  statusLine.className = r.ok ? '' : 'error';
  statusLine.textContent = r.ok ? 'Connection ' + r.body.id + ' created.' : 'Refused: ' + r.error;
  if (r.ok) ev.target.reset();
  refresh();
});

timer = setInterval(refresh, 2000);
refresh();
