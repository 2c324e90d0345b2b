// The query page: newest / oldest / range / since against the REST API,
// paged by timestamp cursors (one page of rows in the DOM), a table and
// pretty JSON; the CSV and NDJSON downloads are the
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
// Paging: a cursor made of timestamps, one request of `limit` + 1 objects
// a page (the extra one only says whether a next page exists, so "Next
// page" is never enabled onto an empty page). `cursors` is the stack of
// the pages' cursors: the last is the page shown, Previous pops it.
let cursors = [];
let hasNext = false;
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

/** The query of the form, fixed when Run is pressed: its route, its
 * parameters and the way its pages go (newest walks back in time). */
function formQuery() {
  const f = new FormData(form);
  const q = new URLSearchParams();
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
  const limit = Math.max(1, Math.min(100000, Math.floor(Number(document.getElementById('q-limit').value)) || 100));
  return { route, params: q, limit, descending: route === 'newest' };
}

/** The URL of one page: the query with its cursor. Ascending pages start
 * past the last timestamp seen (`start_time` on range and oldest; a since
 * window becomes a range from there), newest-first pages end before the
 * oldest seen (`end_time` on newest). */
function pageUrl(query, cursor) {
  const q = new URLSearchParams(query.params);
  q.set('limit', String(query.limit + 1));
  if (cursor !== null) {
    if (query.descending) {
      q.set('end_time', cursor);
    } else {
      q.delete('since');
      q.set('start_time', cursor);
    }
  }
  return storePath(name, '/data/' + query.route + '?' + q.toString());
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

let query = null;
// Runs started; an answer to an older one than the last is dropped.
let runs = 0;
// The rows of the page shown (the next cursor is past the last).
let lastRows = [];

/** Forgets what a failed query left: rows, JSON, paging and downloads. */
function clearResults() {
  tbody.replaceChildren();
  lastRows = [];
  pre.textContent = '';
  exportQuery = null;
  hasNext = false;
  prev.disabled = next.disabled = true;
  csvButton.disabled = ndjsonButton.disabled = true;
}

/** Shows `rows` in one DOM write: the rows are built in a fragment, and
 * nothing reads layout while they are. */
function showRows(rows) {
  const frag = document.createDocumentFragment();
  for (const o of rows) {
    const tr = document.createElement('tr');
    tr.append(el('td', tsTime(o.timestamp)), el('td', o.timestamp, 'num'), el('td', o.block_num, 'num'),
      el('td', o.size, 'num'), el('td', o.data === null ? '' : dataText(o.data), 'data'));
    frag.append(tr);
  }
  tbody.replaceChildren(frag);
}

/** Runs the page whose cursor is on top of the stack. */
async function run() {
  const cursor = cursors[cursors.length - 1];
  statusLine.textContent = 'querying…';
  statusLine.className = '';
  delete document.getElementById('results').dataset.renderMs;
  prev.disabled = next.disabled = true;
  const seq = ++runs;
  const r = await api('GET', pageUrl(query, cursor));
  if (seq !== runs) return;
  if (!r.ok) {
    clearResults();
    statusLine.textContent = 'Error: ' + r.error;
    statusLine.className = 'error';
    return;
  }
  exportQuery = query.exportParams;
  const all = r.body.objects;
  const rows = all.length > query.limit ? all.slice(0, query.limit) : all;
  // Newest first, the next cursor is the oldest shown - 1; an end_time of
  // 0 means no bound, so paging stops at timestamp 1 (an object at 0 is
  // left to the other modes).
  hasNext = all.length > query.limit
    && !(query.descending && BigInt(rows[rows.length - 1].timestamp) <= 1n);
  const began = performance.now();
  showRows(rows);
  pre.textContent = JSON.stringify(rows, null, 2);
  // The time to render the page, layout and paint included (the frame
  // after it): the browser tests print it.
  const table = document.getElementById('results');
  table.dataset.buildMs = String(performance.now() - began);
  requestAnimationFrame(() => setTimeout(() => { table.dataset.renderMs = String(performance.now() - began); }, 0));
  statusLine.textContent = rows.length + ' object(s), page ' + cursors.length;
  prev.disabled = cursors.length <= 1;
  next.disabled = !hasNext;
  csvButton.disabled = ndjsonButton.disabled = rows.length === 0;
  lastRows = rows;
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  query = formQuery();
  query.exportParams = exportParams();
  cursors = [null];
  run();
});
prev.addEventListener('click', () => {
  if (cursors.length > 1) cursors.pop();
  run();
});
next.addEventListener('click', () => {
  if (!hasNext || lastRows.length === 0) return;
  // Past the last row shown: its timestamp + 1 going forward, - 1 going
  // back (timestamps are nanosecond strings: BigInt keeps them exact).
  const edge = BigInt(lastRows[lastRows.length - 1].timestamp);
  cursors.push(String(query.descending ? edge - 1n : edge + 1n));
  run();
});

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
