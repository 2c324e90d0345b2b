// The alerts page: a store's alert rules (create, delete) and the alerts
// they fired, newest first, both refreshed every 2 s through the REST API
// (README "Alert rules"). Stored values go in with textContent only.
import { api, el, storeName, storePath, tsTime, dataText } from './app.js';

const name = storeName('alerts-page');
const rulesBody = document.querySelector('#rules tbody');
const alertsBody = document.querySelector('#alerts tbody');
const rulesStatus = document.getElementById('rules-status');
const alertsStatus = document.getElementById('alerts-status');
const SHOWN = 100;
let note = null;
let ruleCount = null;

function render() {
  const count = ruleCount === null ? '' : ruleCount + ' rule(s)';
  const text = note ? note.text : '';
  rulesStatus.className = note && !note.ok ? 'error' : '';
  rulesStatus.textContent = count && text ? count + ' · ' + text : count || text;
}

function say(ok, text) {
  note = { ok, text };
  render();
}

/** Nanoseconds (a number or a digit string) as an ISO time (UTC), or "never". */
function when(ns) {
  return ns === null || ns === undefined ? 'never' : tsTime(String(ns));
}

async function refreshRules() {
  const r = await api('GET', storePath(name, '/rules'));
  if (!r.ok) {
    ruleCount = null;
    say(false, 'Error: ' + r.error);
    return;
  }
  const list = (r.body && r.body.rules) || [];
  ruleCount = list.length;
  rulesBody.replaceChildren(...list.map((rule) => {
    const tr = document.createElement('tr');
    tr.dataset.name = rule.name;
    const del = el('button', 'Delete');
    del.type = 'button';
    del.className = 'danger';
    del.setAttribute('aria-label', 'Delete rule ' + rule.name);
    del.addEventListener('click', () => remove(rule.name));
    const action = document.createElement('td');
    action.append(del);
    tr.append(el('td', rule.name), el('td', rule.condition, 'lines'), el('td', rule.cooldown),
      el('td', rule.alerts_fired ?? 0, 'num'), el('td', when(rule.last_fired)), action);
    return tr;
  }));
  render();
}

async function refreshAlerts() {
  const r = await api('GET', storePath(name, '/alerts?limit=' + SHOWN));
  if (!r.ok) {
    alertsStatus.className = 'error';
    alertsStatus.textContent = 'Error: ' + r.error;
    return;
  }
  const list = (r.body && r.body.alerts) || [];
  alertsBody.replaceChildren(...list.map((a) => {
    const tr = document.createElement('tr');
    const data = a.data_omitted ? '(object over 64 KiB, not kept)' : dataText(a.data);
    tr.append(el('td', when(a.fired_at)), el('td', a.rule), el('td', when(a.timestamp)), el('td', data, 'data'));
    return tr;
  }));
  alertsStatus.className = '';
  alertsStatus.textContent = list.length
    ? list.length + ' alert(s) shown, newest first' + (list.length === SHOWN ? ' (the newest ' + SHOWN + ')' : '')
    : 'No alerts yet.';
}

function refresh() {
  return Promise.all([refreshRules(), refreshAlerts()]);
}

async function remove(rule) {
  const r = await api('DELETE', storePath(name, '/rules/' + encodeURIComponent(rule)));
  say(r.ok, r.ok ? 'Rule ' + rule + ' deleted.' : 'Error: ' + r.error);
  refreshRules();
}

document.getElementById('rule-create').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  const body = { name: String(f.get('name')).trim(), condition: String(f.get('condition')) };
  const cooldown = String(f.get('cooldown') || '').trim();
  if (cooldown) body.cooldown = cooldown;
  const r = await api('POST', storePath(name, '/rules'), body);
  say(r.ok, r.ok ? 'Rule ' + body.name + ' created.' : 'Refused: ' + r.error);
  if (r.ok) ev.target.reset();
  refreshRules();
});

refresh();
setInterval(refresh, 2000);
