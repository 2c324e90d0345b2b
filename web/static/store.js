// The store page: live tail over the WebSocket read stream (the session
// cookie authenticates it), the live chart, soft delete of an object.
import { api, el, tsTime, dataText, parseJSON, storeName, storePath } from './app.js';
import { LiveChart } from './chart.js';

const MAX_ROWS = 200;
const WINDOW_MS = 5 * 60 * 1000;

const name = storeName('store-page');
const tbody = document.querySelector('#tail tbody');
const status = document.getElementById('live-status');
const pauseButton = document.getElementById('pause');
const fieldsBox = document.getElementById('chart-fields');
const noFields = document.getElementById('no-fields');
const chart = new LiveChart(document.getElementById('chart'), WINDOW_MS);
let paused = false;
let held = [];

function row(o) {
  const tr = document.createElement('tr');
  const time = el('td', tsTime(o.timestamp));
  // The nanosecond timestamp column is hidden on a phone: kept in the title.
  time.title = o.timestamp + ' ns';
  tr.append(time, el('td', o.timestamp, 'num ts'), el('td', dataText(o.data), 'data'));
  return tr;
}

function show(objects) {
  // Newest first: the newest goes on top.
  for (const o of objects) tbody.prepend(row(o));
  while (tbody.rows.length > MAX_ROWS) tbody.deleteRow(tbody.rows.length - 1);
}

function addField(field, index) {
  noFields.hidden = true;
  const label = document.createElement('label');
  const box = document.createElement('input');
  box.type = 'checkbox';
  box.value = field;
  box.checked = chart.selected.size < 4;
  if (box.checked) chart.selected.add(field);
  box.addEventListener('change', () => {
    if (box.checked) chart.selected.add(field); else chart.selected.delete(field);
    chart.draw();
  });
  label.append(box, el('span', '', 'swatch c' + (index % 8)), el('span', field));
  fieldsBox.append(label);
}

function plot(o) {
  if (!o.data || typeof o.data !== 'object' || Array.isArray(o.data)) return;
  const ms = Number(BigInt(o.timestamp) / 1000000n);
  for (const [k, v] of Object.entries(o.data)) {
    if (typeof v !== 'number' || !Number.isFinite(v)) continue;
    if (chart.add(k, ms, v)) addField(k, chart.series.get(k).index);
  }
}

function receive(o) {
  plot(o);
  factsSoon(500);
  if (paused) held.push(o); else show([o]);
}

pauseButton.addEventListener('click', () => {
  paused = !paused;
  pauseButton.textContent = paused ? 'Resume' : 'Pause';
  pauseButton.setAttribute('aria-pressed', String(paused));
  if (!paused) { show(held); held = []; }
});

function connect() {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const ws = new WebSocket(proto + '//' + location.host + storePath(name, '/ws/read?from=now'));
  ws.addEventListener('open', () => { status.textContent = 'live'; status.className = 'ok'; });
  ws.addEventListener('message', (ev) => {
    let m;
    try { m = parseJSON(ev.data); } catch { return; }
    if (m.type === 'data') receive(m);
    else if (m.type === 'gap') status.textContent = 'live (' + m.lost + ' objects overwritten before they were shown)';
    else if (m.type === 'error') { status.textContent = 'error: ' + m.message; status.className = 'error'; }
  });
  ws.addEventListener('close', () => {
    status.textContent = 'disconnected, reconnecting…';
    status.className = 'error';
    setTimeout(connect, 2000);
  });
}

async function start() {
  // The newest objects first, then everything new as it arrives.
  const r = await api('GET', storePath(name, '/data/newest?limit=50&include_data=true'));
  if (r.ok && r.body) {
    const objs = r.body.objects.slice().reverse();
    for (const o of objs) plot(o);
    show(objs);
  }
  connect();
  setInterval(() => chart.draw(), 1000);
}

document.getElementById('window').addEventListener('change', (ev) => {
  chart.windowMs = Number(ev.target.value) * 60 * 1000;
  chart.draw();
});

// The figures with the insert rate, from the summary: one request every 5 s.
async function refreshFacts() {
  const r = await api('GET', '/api/summary?store=' + encodeURIComponent(name));
  const st = r.ok && r.body && Array.isArray(r.body.stores) ? r.body.stores[0] : null;
  if (!st || st.error !== undefined) return;
  const set = (id, v) => { document.getElementById(id).textContent = v; };
  set('f-objects', String(st.object_count));
  set('f-fill', (st.num_blocks ? (st.active_blocks * 100 / st.num_blocks) : 0).toFixed(1) + '%');
  set('f-rate', (st.insert_rate >= 10 ? st.insert_rate.toFixed(0) : st.insert_rate.toFixed(2)) + '/s');
  set('f-oldest', Number(st.oldest_timestamp) ? st.oldest_time : '—');
  set('f-newest', Number(st.newest_timestamp) ? st.newest_time : '—');
}

// At most one request per 5 s: every 5 s, and soon after new data when
// the last one is older than that.
const FACTS_MS = 5000;
let factsLast = 0;
let factsTimer = 0;
function factsSoon(delay) {
  if (factsTimer) return;
  factsTimer = setTimeout(() => {
    factsTimer = 0;
    factsLast = Date.now();
    refreshFacts();
  }, Math.max(delay, factsLast + FACTS_MS - Date.now()));
}
setInterval(() => factsSoon(0), FACTS_MS);

document.getElementById('soft-delete').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const ts = document.getElementById('del-ts').value.trim();
  const out = document.getElementById('del-result');
  if (!/^\d+$/.test(ts)) { out.textContent = 'A timestamp is a whole number of nanoseconds.'; return; }
  const r = await api('DELETE', storePath(name, '/data/time/' + ts));
  out.textContent = r.ok ? 'Object ' + ts + ' deleted.' : 'Refused: ' + r.error;
  out.className = r.ok ? 'ok' : 'error';
  if (r.ok) {
    for (const tr of [...tbody.rows]) if (tr.cells[1].textContent === ts) tr.remove();
  }
});

start();
