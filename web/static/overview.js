// The overview kept current: each store's figures from its stats, and
// its outbound connections counted by status (every 5 s). The insert
// rate stays as the server rendered it.
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

async function refresh() {
  for (const row of document.querySelectorAll('#stores tr[data-store]')) {
    const cell = row.querySelector('td.conns a');
    if (!cell) continue;
    const r = await api('GET', storePath(row.dataset.store, '/ws/connections'));
    if (r.status === 404 && r.error === 'not found') {
      // The server has no outbound connections API: stop asking.
      clearInterval(timer);
      return;
    }
    if (!r.ok || !r.body || !Array.isArray(r.body.connections)) {
      cell.textContent = '—';
      continue;
    }
    const list = r.body.connections;
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
