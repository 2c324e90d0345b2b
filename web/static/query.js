// The query page: newest / oldest / range / since against the REST API,
// paging, a table and pretty JSON; the CSV and NDJSON downloads are the
// server's export of the whole range of the query last run (every object,
// not the page shown; newest and oldest export the whole store), fetched
// by the browser with the session cookie.
import { api, el, tsTime, dataText, storeName, storePath } from './app.js';

const name = storeName('query-page');
const form = document.getElementById('query');
const mode = document.getElementById('q-mode');
const tbody = document.querySelector('#results tbody');
const pre = document.getElementById('json');
const statusLine = document.getElementById('q-status');
const prev = document.getElementById('q-prev');
const next = document.getElementById('q-next');
const csvButton = document.getElementById('dl-csv');
const ndjsonButton = document.getElementById('dl-ndjson');
let page = 0;
let results = [];
// The export parameters of the query last run (the form may have changed
// since).
let exportQuery = null;

function showFields() {
  const m = mode.value;
  for (const e of form.querySelectorAll('.for-range')) e.hidden = m !== 'range';
  for (const e of form.querySelectorAll('.for-since')) e.hidden = m !== 'since';
}
mode.addEventListener('change', showFields);
showFields();

// Paging asks for (page + 1) * limit objects and shows the last `limit`:
// the API has no offset, and this works the same for every mode.
function url(limit) {
  const f = new FormData(form);
  const q = new URLSearchParams();
  q.set('limit', String(limit));
  q.set('include_data', f.get('include_data') ? 'true' : 'false');
  const filter = String(f.get('filter') || '');
  if (filter) {
    q.set('filter', filter);
    if (f.get('filter_ignore_case')) q.set('filter_ignore_case', 'true');
  }
  let route = mode.value;
  if (route === 'range') {
    const s = String(f.get('start_time') || '').trim(), e = String(f.get('end_time') || '').trim();
    if (s) q.set('start_time', s);
    if (e) q.set('end_time', e);
  } else if (route === 'since') {
    q.set('since', String(f.get('since') || '').trim());
    route = 'range';
  }
  return storePath(name, '/data/' + route + '?' + q.toString());
}

/** The export parameters of the form's query: its range and filter. */
function exportParams() {
  const f = new FormData(form);
  const q = new URLSearchParams();
  const filter = String(f.get('filter') || '');
  if (filter) {
    q.set('filter', filter);
    if (f.get('filter_ignore_case')) q.set('filter_ignore_case', 'true');
  }
  if (mode.value === 'range') {
    const s = String(f.get('start_time') || '').trim(), e = String(f.get('end_time') || '').trim();
    if (s) q.set('start_time', s);
    if (e) q.set('end_time', e);
  } else if (mode.value === 'since') {
    q.set('since', String(f.get('since') || '').trim());
  }
  return q;
}

async function run() {
  const limit = Math.max(1, Number(document.getElementById('q-limit').value) || 100);
  statusLine.textContent = 'querying…';
  statusLine.className = '';
  const r = await api('GET', url(limit * (page + 1)));
  if (!r.ok) {
    statusLine.textContent = 'Error: ' + r.error;
    statusLine.className = 'error';
    return;
  }
  exportQuery = exportParams();
  const all = r.body.objects;
  results = all.slice(page * limit);
  tbody.replaceChildren(...results.map((o) => {
    const tr = document.createElement('tr');
    tr.append(el('td', tsTime(o.timestamp)), el('td', o.timestamp, 'num'), el('td', o.block_num, 'num'),
      el('td', o.size, 'num'), el('td', o.data === null ? '' : dataText(o.data), 'data'));
    return tr;
  }));
  pre.textContent = JSON.stringify(results, null, 2);
  statusLine.textContent = results.length + ' object(s), page ' + (page + 1);
  prev.disabled = page === 0;
  next.disabled = all.length < limit * (page + 1);
  csvButton.disabled = ndjsonButton.disabled = results.length === 0;
}

form.addEventListener('submit', (ev) => { ev.preventDefault(); page = 0; run(); });
prev.addEventListener('click', () => { page = Math.max(0, page - 1); run(); });
next.addEventListener('click', () => { page += 1; run(); });

/** Downloads the server's export of the last query as `format`. */
function download(format) {
  if (!exportQuery) return;
  const q = new URLSearchParams(exportQuery);
  q.set('format', format);
  const a = document.createElement('a');
  a.href = storePath(name, '/export?' + q.toString());
  a.download = '';
  document.body.append(a);
  a.click();
  a.remove();
}
csvButton.addEventListener('click', () => download('csv'));
ndjsonButton.addEventListener('click', () => download('ndjson'));
