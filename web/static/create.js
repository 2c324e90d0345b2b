// The create form: the `tsstore calc` figures (capacity, retention at a
// rate) from GET /create/calc as the user types.
const ids = ['num_blocks', 'data_block_size', 'object_size', 'rate'];
const out = document.getElementById('calc');
let timer = 0;

function value(id) {
  const e = document.getElementById(id);
  return e.value.trim() || e.placeholder || '';
}

async function update() {
  const q = new URLSearchParams({
    blocks: value('num_blocks'),
    data_size: value('data_block_size'),
    object_size: value('object_size'),
    rate: value('rate'),
  });
  try {
    const r = await fetch('/create/calc?' + q.toString(), { credentials: 'same-origin' });
    const j = await r.json();
    out.className = r.ok ? '' : 'error';
    out.textContent = r.ok
      ? 'Data file ' + j.data_size + ' · capacity ' + j.capacity.toLocaleString() + ' objects · retention ' + j.retention + ' at ' + value('rate') + '/s'
      : j.error;
  } catch {
    out.textContent = '';
  }
}

for (const id of ids) {
  document.getElementById(id).addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(update, 150);
  });
}
update();
