// The query page: newest / oldest / range / since against the REST API,
// paging, a table and pretty JSON, CSV and NDJSON built from the results.
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

/** One CSV field, quoted when it must be (RFC 4180). */
export function csvField(v) {
  const s = v === null || v === undefined ? '' : String(v);
  return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}

/** The results as CSV: timestamp,time,block_num,size,data. */
export function toCSV(objects) {
  const lines = ['timestamp,time,block_num,size,data'];
  for (const o of objects) {
    lines.push([o.timestamp, tsTime(o.timestamp), o.block_num, o.size, o.data === null ? '' : dataText(o.data)]
      .map(csvField).join(','));
  }
  return lines.join('\r\n') + '\r\n';
}

/** The results as NDJSON, timestamps as numbers again. */
export function toNDJSON(objects) {
  return objects.map((o) => JSON.stringify(o).replace(/^\{"timestamp":"(-?\d+)"/, '{"timestamp":$1')).join('\n') + '\n';
}

function download(text, type, ext) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([text], { type }));
  a.download = name + '-' + mode.value + '.' + ext;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
csvButton.addEventListener('click', () => download(toCSV(results), 'text/csv', 'csv'));
ndjsonButton.addEventListener('click', () => download(toNDJSON(results), 'application/x-ndjson', 'ndjson'));
