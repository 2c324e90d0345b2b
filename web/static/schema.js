// The schema page: append a field (the API enforces append-only and its
// message is shown as is).
import { api, storeName, storePath } from './app.js';

const name = storeName('schema-page');
const out = document.getElementById('schema-result');

document.getElementById('append').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const field = document.getElementById('f-name').value.trim();
  const type = document.getElementById('f-type').value;
  const cur = await api('GET', storePath(name, '/schema'));
  const fields = cur.ok && cur.body ? cur.body.fields : [];
  const index = fields.reduce((m, f) => Math.max(m, f.index), 0) + 1;
  const r = await api('PUT', storePath(name, '/schema'), { fields: [...fields, { index, name: field, type }] });
  if (r.ok) {
    location.reload();
  } else {
    out.textContent = 'Refused: ' + r.error;
    out.className = 'error';
  }
});
