// The overview's connection states: each store's outbound connections,
// counted by status (refreshed every 5 s).
import { api, storePath } from './app.js';

let timer = 0;

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
