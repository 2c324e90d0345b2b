// The overview kept current: each store's figures from its stats, and
// its outbound links (WebSocket connections, MQTT sinks and
// subscriptions) counted by status (every 5 s). The insert rate stays as
// the server rendered it.
import { api, storePath } from './app.js';

let timer = 0;

async function refreshFigures() {
  for (const row of document.querySelectorAll('#stores tr[data-store]')) {
    const objects = row.querySelector('td.objects');
    if (!objects) continue;
    const r = await api('GET', storePath(row.dataset.store, '/stats'));
    if (!r.ok || !r.body) continue;
    const st = r.body;
    objects.textContent = String(st.object_count);
    row.querySelector('td.fill').textContent = (st.num_blocks ? st.active_blocks * 100 / st.num_blocks : 0).toFixed(1) + '%';
    row.querySelector('td.oldest').textContent = st.oldest_timestamp ? st.oldest_time : '—';
    row.querySelector('td.newest').textContent = st.newest_timestamp ? st.newest_time : '—';
  }
}
setInterval(refreshFigures, 5000);

// Every outbound link of a store: its WebSocket connections, MQTT sinks
// and MQTT subscriptions, each list under its own key.
const LINKS = [['/ws/connections', 'connections'], ['/mqtt/connections', 'connections'], ['/mqtt/subscriptions', 'subscriptions']];
const missing = new Set();

async function refresh() {
  for (const row of document.querySelectorAll('#stores tr[data-store]')) {
    const cell = row.querySelector('td.conns a');
    if (!cell) continue;
    const list = [];
    let failed = false;
    for (const [p, key] of LINKS) {
      if (missing.has(p)) continue;
      const r = await api('GET', storePath(row.dataset.store, p));
      // The server has no such API: stop asking for it.
      if (r.status === 404 && r.error === 'not found') missing.add(p);
      else if (r.ok && r.body && Array.isArray(r.body[key])) list.push(...r.body[key]);
      else failed = true;
    }
    if (missing.size === LINKS.length) {
      clearInterval(timer);
      return;
    }
    if (failed && list.length === 0) {
      cell.textContent = '—';
      continue;
    }
    if (list.length === 0) {
      cell.textContent = 'none';
      continue;
    }
    const by = new Map();
    for (const c of list) by.set(c.status, (by.get(c.status) || 0) + 1);
    cell.textContent = [...by].map(([s, n]) => n + ' ' + s).join(', ');
    cell.className = by.has('error') ? 'status-error' : (by.has('connected') ? 'status-connected' : 'status-connecting');
  }
}

timer = setInterval(refresh, 5000);
refresh();
