// The schema page: append a field (the API enforces append-only and its
// message is shown as is). Appending is permanent, so the form only asks:
// a confirmation step (a button of the page, no window.confirm) sends it.
import { api, storeName, storePath } from './app.js';

const name = storeName('schema-page');
const out = document.getElementById('schema-result');
const form = document.getElementById('append');
const confirmBox = document.getElementById('append-confirm');
const question = document.getElementById('append-question');
const yes = document.getElementById('append-yes');
const no = document.getElementById('append-no');
// The field asked about, fixed when the form was submitted.
let pending = null;

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const field = document.getElementById('f-name').value.trim();
  const type = document.getElementById('f-type').value;
  pending = { field, type };
  question.textContent = 'Append field "' + field + '" (' + type + ') to the schema? '
    + 'This is permanent: fields can never be changed or removed.';
  confirmBox.hidden = false;
  yes.focus();
});

no.addEventListener('click', () => {
  pending = null;
  confirmBox.hidden = true;
  document.getElementById('f-name').focus();
});

yes.addEventListener('click', async () => {
  if (!pending) return;
  const { field, type } = pending;
  pending = null;
  confirmBox.hidden = true;
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
