// The overview kept current: every store's figures, insert rate and
// outbound links by status come from one request (GET /api/summary)
// every 5 s, whatever the number of stores; rows are updated in place,
// added and removed as stores come and go.
import { api, el } from './app.js';

const INTERVAL_MS = 5000;
const tbody = document.querySelector('#stores tbody');
const box = document.getElementById('stores-box');
const empty = document.getElementById('no-stores');

function bytes(n) {
  const U = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < U.length - 1) { v /= 1024; i++; }
  return i === 0 ? n + ' B' : v.toFixed(1) + ' ' + U[i];
}

function rate(r) {
  return (r >= 10 ? r.toFixed(0) : r.toFixed(2)) + '/s';
}

function time(ts, text) {
  return Number(ts) ? text : '—';
}

function links(counts) {
  const by = Object.entries(counts || {});
  if (by.length === 0) return ['none', ''];
  const text = by.map(([s, n]) => n + ' ' + s).join(', ');
  const has = (s) => Object.hasOwn(counts, s);
  return [text, has('error') ? 'status-error' : (has('connected') ? 'status-connected' : 'status-connecting')];
}

function cellsOf(s) {
  if (s.error !== undefined) return null;
  return [
    ['', s.data_type], ['', bytes(s.footprint_bytes)],
    ['fill', (s.num_blocks ? s.active_blocks * 100 / s.num_blocks : 0).toFixed(1) + '%'],
    ['num objects', String(s.object_count)],
    ['oldest', time(s.oldest_timestamp, s.oldest_time)],
    ['newest', time(s.newest_timestamp, s.newest_time)],
    ['num rate', rate(s.insert_rate)],
  ];
}

function storeHref(name) {
  return '/stores/' + encodeURIComponent(name);
}

// Builds a row's cells anew (a store that turned broken or back).
function build(tr, s) {
  tr.replaceChildren();
  const a = el('a', s.name);
  a.href = storeHref(s.name);
  const name = el('td', undefined, 'name');
  name.append(a);
  tr.append(name);
  const cells = cellsOf(s);
  if (!cells) {
    const td = el('td', s.error, 'error');
    td.colSpan = 8;
    tr.append(td);
    return;
  }
  for (const [cls, text] of cells) tr.append(el('td', text, cls || undefined));
  const conns = el('td', undefined, 'conns');
  const link = el('a', '—');
  link.href = storeHref(s.name) + '/connections';
  conns.append(link);
  tr.append(conns);
}

function update(tr, s) {
  const cells = cellsOf(s);
  const broken = tr.querySelector('td.error') !== null;
  if (!cells || broken) build(tr, s);
  if (cells) {
    // Cells 1.. in order: type, size, fill, objects, oldest, newest, rate.
    cells.forEach(([, text], i) => {
      const td = tr.cells[i + 1];
      if (td.textContent !== text) td.textContent = text;
    });
    const a = tr.querySelector('td.conns a');
    const [text, cls] = links(s.links);
    a.textContent = text;
    a.className = cls;
  }
}

async function refresh() {
  const r = await api('GET', '/api/summary');
  if (!r.ok || !r.body || !Array.isArray(r.body.stores)) return;
  const rows = new Map([...tbody.querySelectorAll('tr[data-store]')].map((tr) => [tr.dataset.store, tr]));
  let before = null;
  // The server lists the stores in order: walk them, reusing rows.
  for (const s of r.body.stores) {
    let tr = rows.get(s.name);
    if (tr) rows.delete(s.name);
    else {
      tr = document.createElement('tr');
      tr.dataset.store = s.name;
      build(tr, s);
    }
    update(tr, s);
    const at = before ? before.nextElementSibling : tbody.firstElementChild;
    if (at !== tr) tbody.insertBefore(tr, at);
    before = tr;
  }
  for (const tr of rows.values()) tr.remove();
  const none = r.body.stores.length === 0;
  box.hidden = none;
  empty.hidden = !none;
}

setInterval(refresh, INTERVAL_MS);
