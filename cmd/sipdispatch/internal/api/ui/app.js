// sipdispatch web console (docs/operations.md, "Web console"). Plain
// JavaScript, no build step: it polls the node's JSON-RPC methods (the
// same ones the CLI calls) and /metrics, and keeps the RTT and rate
// history it draws in memory only.
'use strict';

const TOKEN_KEY = 'sipdispatch.token';
const POLL_MS = 2000;      // sets and cluster pages
const TRAFFIC_MS = 1000;   // live traffic page
const SPARK_POINTS = 150;  // RTT history: 5 minutes at POLL_MS
const RATE_POINTS = 120;   // request rate history: 2 minutes at TRAFFIC_MS
const CALL_TIMEOUT_MS = 30000; // as the CLI's: a reload commits through raft

const $ = (id) => document.getElementById(id);

// AuthError: the node refused the token (or wants one); the login form shows again.
class AuthError extends Error {}

// RPCError is a JSON-RPC error object, shown as the CLI shows it.
class RPCError extends Error {
  constructor(method, e) {
    super(method + ': ' + e.message + (e.data ? ': ' + e.data : ''));
    this.code = e.code;
  }
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

// call sends one request with the bearer token when the tab has one. The
// token never goes into a URL: only into the Authorization header.
async function call(path, opts) {
  const headers = Object.assign({}, opts.headers);
  const t = token();
  if (t) headers['Authorization'] = 'Bearer ' + t;
  // A node that does not answer must not stall the polling for good.
  const signal = AbortSignal.timeout(CALL_TIMEOUT_MS);
  const r = await fetch(path, Object.assign({}, opts, { headers, signal, cache: 'no-store', credentials: 'omit' }));
  if (r.status === 401) {
    throw new AuthError(t ? 'The node refused this token.' : 'This node needs its API token.');
  }
  if (r.status === 403) {
    throw new Error((await r.text()).trim());
  }
  return r;
}

let rpcID = 0;

async function rpc(method, ...params) {
  const req = { jsonrpc: '2.0', method, id: ++rpcID };
  if (params.length) req.params = params;
  const r = await call('../RPC', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req),
  });
  let j;
  try {
    j = await r.json();
  } catch (e) {
    throw new Error(method + ': HTTP ' + r.status);
  }
  if (j.error) throw new RPCError(method, j.error);
  return j.result;
}

// el builds an element; text goes in as text nodes, never as HTML, since
// URIs and attributes come from the destination source.
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const SVG = 'http://www.w3.org/2000/svg';

// sparkline draws values as a small SVG polyline scaled to their range.
function sparkline(values, w, h, title) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('width', w);
  svg.setAttribute('height', h);
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  if (title) {
    const t = document.createElementNS(SVG, 'title');
    t.textContent = title;
    svg.append(t);
  }
  if (values.length < 2) return svg;
  const max = Math.max(...values), min = Math.min(0, ...values);
  const span = max - min || 1;
  const step = w / (values.length - 1);
  const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - ((v - min) / span) * (h - 2)).toFixed(1)}`);
  const line = document.createElementNS(SVG, 'polyline');
  line.setAttribute('points', pts.join(' '));
  svg.append(line);
  return svg;
}

function push(arr, v, n) {
  arr.push(v);
  if (arr.length > n) arr.splice(0, arr.length - n);
}

function showError(msg) {
  $('error-text').textContent = msg;
  $('error').hidden = false;
}

function notice(msg) {
  const n = $('notice');
  n.textContent = msg;
  n.hidden = !msg;
}

// ---- navigation, login and polling ------------------------------------------

const pages = { sets: refreshSets, cluster: refreshCluster, traffic: refreshTraffic };
let timer = null;
let generation = 0; // bumps on every page switch so that a late reply of the old page is dropped

function currentPage() {
  const p = location.hash.replace('#', '');
  return pages[p] ? p : 'sets';
}

function showLogin(msg) {
  clearTimeout(timer);
  generation++;
  sessionStorage.removeItem(TOKEN_KEY);
  for (const s of document.querySelectorAll('.page')) s.hidden = true;
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('error').hidden = true;
  notice('');
  $('status').textContent = '';
  $('login-msg').textContent = msg || '';
  $('login').hidden = false;
  $('token').value = '';
  $('token').focus();
}

function showPage() {
  clearTimeout(timer);
  const gen = ++generation;
  const name = currentPage();
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = !token();
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== 'page-' + name;
  const every = name === 'traffic' ? TRAFFIC_MS : POLL_MS;
  const tick = async () => {
    try {
      await pages[name]();
      if (gen !== generation) return;
      $('status').textContent = 'updated ' + new Date().toLocaleTimeString();
      $('status').classList.remove('stale');
    } catch (e) {
      if (gen !== generation) return;
      if (e instanceof AuthError) {
        showLogin(e.message);
        return;
      }
      $('status').textContent = String(e.message || e);
      $('status').classList.add('stale');
    }
    if (gen === generation) timer = setTimeout(tick, every);
  };
  tick();
}

// act runs an operator action after a confirm(); a refusal shows the
// node's error as the CLI would print it.
async function act(question, method, ...params) {
  if (!confirm(question)) return false;
  try {
    const res = await rpc(method, ...params);
    $('error').hidden = true;
    notice(typeof res === 'string' ? res : method + ': done');
    // The change is made; a failed redraw is retried by the next poll.
    await refreshSets().catch(() => {});
    return true;
  } catch (e) {
    if (e instanceof AuthError) {
      showLogin(e.message);
      return false;
    }
    notice('');
    showError(String(e.message || e));
    return false;
  }
}

// ---- page 1: sets and destinations ------------------------------------------

const STATES = [
  ['active', 'a'], ['inactive', 'i'], ['disabled', 'd'], ['probing', 'p'],
];
const rttHistory = new Map(); // "set uri" -> recent RTT estimates, ms

// The sets page is rebuilt only when its shape (sets, destinations, duids)
// changes; every other poll refreshes the cells in place, so a button is
// never replaced under the pointer while RTT and load change every second.
let setsShape = '';
let setsView = null; // { summary, calls: Map(set -> span), rows: Map("set uri" -> cells) }

function badges(flags) {
  const s = flags[0], p = flags[1] === 'P';
  const name = { A: 'active', I: 'inactive', D: 'disabled', T: 'trying' }[s] || s;
  return el('span', { class: 'badges', title: flags + ': ' + name + (p ? ', probing' : '') },
    el('span', { class: 'badge st-' + s }, s),
    p ? el('span', { class: 'badge st-P' }, 'P') : null);
}

function loadBar(load, max) {
  const frac = max > 0 ? Math.min(1, load / max) : 0;
  const cls = frac >= 0.9 ? 'bar hot' : frac >= 0.7 ? 'bar warm' : 'bar';
  // Through the CSSOM: the page's Content-Security-Policy refuses style attributes.
  const fill = el('div', { class: 'fill' });
  fill.style.width = (frac * 100).toFixed(1) + '%';
  return el('div', { class: 'load', title: max > 0 ? `${load} calls of maxload ${max}` : `${load} calls, no maxload` },
    el('div', { class: cls }, fill),
    el('span', { class: 'num' }, max > 0 ? `${load} / ${max}` : String(load)));
}

const ms = (v) => (typeof v === 'number' ? (v >= 100 ? v.toFixed(0) : v.toFixed(1)) : '–');

async function refreshSets() {
  const [list, load] = await Promise.all([
    // A node without destinations answers dispatcher.list with Kamailio's error.
    rpc('dispatcher.list').catch((e) => {
      if (e instanceof RPCError && /No Destination Sets/.test(e.message)) return { NRSETS: 0, RECORDS: [] };
      throw e;
    }),
    rpc('dispatcher.load')]);
  const loads = new Map();
  const calls = new Map();
  for (const s of load.SETS) {
    calls.set(s.ID, s.CALLS);
    for (const t of s.TARGETS) loads.set(s.ID + ' ' + t.URI, t);
  }
  for (const r of list.RECORDS) {
    for (const { DEST: d } of r.SET.TARGETS) {
      if (!d.LATENCY) continue;
      const k = r.SET.ID + ' ' + d.URI;
      if (!rttHistory.has(k)) rttHistory.set(k, []);
      push(rttHistory.get(k), d.LATENCY.EST, SPARK_POINTS);
    }
  }
  const shape = JSON.stringify(list.RECORDS.map((r) => [r.SET.ID,
    r.SET.TARGETS.map(({ DEST: d }) => [d.URI, d.ATTRS && d.ATTRS.DUID])]));
  if (shape !== setsShape || !setsView) {
    setsShape = shape;
    setsView = { summary: el('p', { class: 'summary' }), calls: new Map(), rows: new Map() };
    $('sets').replaceChildren(setsView.summary, ...list.RECORDS.map((r) => renderSet(r.SET)));
  }
  setsView.summary.textContent = `${list.NRSETS} set(s), ${load.PENDING} call-load command(s) pending on this node`;
  for (const r of list.RECORDS) {
    setsView.calls.get(r.SET.ID).textContent = `${calls.get(r.SET.ID) || 0} call(s)`;
    for (const { DEST: d } of r.SET.TARGETS) {
      const k = r.SET.ID + ' ' + d.URI;
      fillRow(setsView.rows.get(k), d, loads.get(k), rttHistory.get(k) || []);
    }
  }
}

// renderSet builds a set's table with empty cells; fillRow fills them.
function renderSet(set) {
  const duids = set.TARGETS.map((t) => t.DEST.ATTRS && t.DEST.ATTRS.DUID).filter(Boolean);
  const rows = set.TARGETS.map(({ DEST: d }) => {
    const c = {};
    for (const name of ['state', 'uri', 'prio', 'weight', 'duid', 'load', 'rtt', 'spark']) c[name] = el('td');
    c.uri.className = 'uri';
    c.uri.textContent = d.URI;
    c.prio.className = c.weight.className = c.rtt.className = 'n';
    setsView.rows.set(set.ID + ' ' + d.URI, c);
    return el('tr', { 'data-set': set.ID, 'data-uri': d.URI },
      c.state, c.uri, c.prio, c.weight, c.duid, c.load, c.rtt, c.spark,
      el('td', null, el('span', { class: 'actions' },
        STATES.map(([name, st]) => el('button', {
          type: 'button', class: 'act act-' + name, 'data-state': st,
          onclick: () => act(`Set ${d.URI} in set ${set.ID} ${name}?`, 'dispatcher.set_state', st, set.ID, d.URI),
        }, name)),
        el('button', {
          type: 'button', class: 'act act-remove',
          onclick: () => act(`Remove ${d.URI} from set ${set.ID}?`, 'dispatcher.remove', set.ID, d.URI),
        }, 'remove'))));
  });
  let duidTools = null;
  if (duids.length) {
    const sel = el('select', { class: 'duid' }, duids.map((u) => el('option', { value: u }, u)));
    duidTools = el('span', { class: 'duid-tools' }, 'by duid ', sel,
      STATES.map(([name, st]) => el('button', {
        type: 'button', class: 'act act-' + name,
        onclick: () => act(`Set duid ${sel.value} in set ${set.ID} ${name}?`, 'dispatcher.set_duid_state', st, set.ID, sel.value),
      }, name)));
  }
  const calls = el('span', { class: 'calls' });
  setsView.calls.set(set.ID, calls);
  return el('div', { class: 'set', 'data-set': set.ID },
    el('h2', null, `Set ${set.ID}`, calls, duidTools),
    el('table', null,
      el('thead', null, el('tr', null,
        ['State', 'URI', ['Priority', 'n'], ['Weight', 'n'], 'DUID', 'Calls / maxload', ['RTT avg / est / max (ms)', 'n'], 'RTT history', 'Set state']
          .map((h) => (Array.isArray(h) ? el('th', { class: h[1] }, h[0]) : el('th', null, h))))),
      el('tbody', null, rows)));
}

function fillRow(c, d, l, hist) {
  const a = d.ATTRS || {};
  l = l || { LOAD: 0, MAXLOAD: a.MAXLOAD || 0 };
  const lat = d.LATENCY;
  c.state.replaceChildren(badges(d.FLAGS));
  c.uri.title = a.BODY || '';
  c.prio.textContent = d.PRIORITY;
  c.weight.textContent = a.WEIGHT ? String(a.WEIGHT) : a.RWEIGHT ? 'r' + a.RWEIGHT : '';
  c.duid.textContent = a.DUID || '';
  c.load.replaceChildren(loadBar(l.LOAD, l.MAXLOAD));
  c.rtt.textContent = lat ? `${ms(lat.AVG)} / ${ms(lat.EST)} / ${ms(lat.MAX)}` : '–';
  c.rtt.title = lat ? `${lat.TIMEOUT} timeout(s), std ${ms(lat.STD)} ms` : 'ds_ping_latency_stats is off';
  c.spark.replaceChildren(lat ? sparkline(hist, 90, 20, 'RTT estimate, last ' + Math.round(hist.length * POLL_MS / 1000) + ' s') : '');
}

// ---- page 2: the cluster -----------------------------------------------------

const since = (s) => s.replace('T', ' ').replace('Z', ' UTC');

function kv(pairs) {
  return el('table', { class: 'kv' }, pairs.map(([k, v, cls]) =>
    el('tr', null, el('th', null, k), el('td', { class: cls || '' }, v))));
}

// table builds a table; a head entry is a title or [title, class] ('n': numbers).
function table(head, rows, cls) {
  const th = (h) => (Array.isArray(h) ? el('th', { class: h[1] }, h[0]) : el('th', null, h));
  return el('table', { class: cls }, el('thead', null, el('tr', null, head.map(th))),
    el('tbody', null, rows.length ? rows : el('tr', null, el('td', { colspan: head.length, class: 'empty' }, 'none'))));
}

async function refreshCluster() {
  const calls = [rpc('cluster.raft'), rpc('cluster.members'), rpc('cluster.probers'), rpc('dispatcher.load')];
  const [raft, members, probers, load] = await Promise.allSettled(calls);
  for (const r of [raft, members, probers, load]) {
    if (r.status === 'rejected' && r.reason instanceof AuthError) throw r.reason;
  }
  if (load.status === 'rejected') throw load.reason;
  const out = [];
  const alone = raft.status === 'rejected' && raft.reason.code === 500 && /Cluster Not Enabled/.test(raft.reason.message);
  if (alone) {
    out.push(el('p', { class: 'summary' }, 'This API serves no cluster view (Cluster Not Enabled).'));
  } else if (raft.status === 'rejected') {
    out.push(el('p', { class: 'error-text' }, raft.reason.message));
  } else {
    const r = raft.value;
    const lag = r.COMMIT_INDEX - r.APPLIED_INDEX;
    const byRaftID = new Map();
    if (members.status === 'fulfilled') for (const m of members.value.MEMBERS || []) byRaftID.set(m.RAFT_ID, m);
    out.push(el('h2', null, 'This node\'s raft view'),
      kv([
        ['role', el('span', { class: 'role role-' + r.STATE }, r.STATE)],
        ['leader', r.LEADER_ID ? `${r.LEADER_ID} (${r.LEADER_ADDR})` : 'none', r.LEADER_ID ? '' : 'bad'],
        ['term', r.TERM],
        ['last index', r.LAST_INDEX],
        ['commit index', r.COMMIT_INDEX],
        ['applied index', r.APPLIED_INDEX],
        ['apply lag', `${lag} entr${lag === 1 ? 'y' : 'ies'}`, lag > 100 ? 'bad' : ''],
      ]),
      el('h2', null, 'Raft peers'),
      table(['ID', 'raft address', 'suffrage', 'role', 'gossip state', 'gossip since'], r.PEERS.map((p) => {
        const m = byRaftID.get(p.ID);
        return el('tr', null, el('td', null, p.ID), el('td', null, p.ADDR), el('td', null, p.SUFFRAGE),
          el('td', null, el('span', { class: 'role role-' + (p.ID === r.LEADER_ID ? 'Leader' : 'Follower') },
            p.ID === r.LEADER_ID ? 'Leader' : 'Follower')),
          el('td', null, m ? el('span', { class: 'gossip g-' + m.STATE }, m.STATE) : '–'),
          el('td', null, m ? since(m.SINCE) : ''));
      })));
  }
  if (members.status === 'fulfilled') {
    out.push(el('h2', null, 'Gossip members'),
      table(['name', 'gossip address', 'state', 'raft id', 'raft address', 'since'], (members.value.MEMBERS || []).map((m) =>
        el('tr', null, el('td', null, m.NAME), el('td', null, m.ADDR),
          el('td', null, el('span', { class: 'gossip g-' + m.STATE }, m.STATE)),
          el('td', null, m.RAFT_ID), el('td', null, m.RAFT_ADDR), el('td', null, since(m.SINCE))))));
  }
  if (probers.status === 'fulfilled') {
    out.push(el('h2', null, 'Keepalive probing: who probes which gateway'),
      table([['set', 'n'], 'URI', 'probed by'], probers.value.PROBERS.map((p) =>
        el('tr', null, el('td', { class: 'n' }, p.SET), el('td', { class: 'uri' }, p.URI), el('td', null, p.NODE)))));
  }
  const l = load.value;
  out.push(el('h2', null, 'Call load'),
    kv([['pending load commands on this node', l.PENDING, l.PENDING > 0 ? 'warn' : '']]),
    table([['set', 'n'], ['calls (load entries)', 'n']], l.SETS.map((s) => el('tr', null, el('td', { class: 'n' }, s.ID), el('td', { class: 'n' }, s.CALLS))), 'narrow'));
  $('cluster').replaceChildren(...out);
}

// ---- page 3: live traffic ----------------------------------------------------

// The traffic page reads the node's own counters from /metrics and turns
// them into rates between two polls, so the node keeps no extra state.
const FAMILIES = ['sipdispatch_sip_requests_total', 'sipdispatch_sip_replies_total', 'sipdispatch_selections_total'];
let lastScrape = null; // { at, values: Map(series -> value) }
const rateHistory = [];

// parseMetrics reads the Prometheus text format's samples of FAMILIES.
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || !FAMILIES.includes(m[1])) continue;
    const labels = {};
    for (const lm of (m[3] || '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    }
    out.set(m[1] + (m[2] || ''), { name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

async function refreshTraffic() {
  const r = await call('../metrics', { method: 'GET' });
  if (!r.ok) throw new Error('/metrics: HTTP ' + r.status);
  const now = performance.now();
  const samples = parseMetrics(await r.text());
  const prev = lastScrape;
  lastScrape = { at: now, values: samples };
  const dt = prev ? (now - prev.at) / 1000 : 0;
  const rate = (key, v) => {
    if (!prev || dt <= 0) return null;
    const p = prev.values.get(key);
    return Math.max(0, v - (p ? p.value : 0)) / dt;
  };
  const groups = { sipdispatch_sip_requests_total: [], sipdispatch_sip_replies_total: [], sipdispatch_selections_total: [] };
  let total = 0;
  for (const [key, s] of samples) {
    const row = { labels: s.labels, value: s.value, rate: rate(key, s.value) };
    groups[s.name].push(row);
    if (s.name === 'sipdispatch_sip_requests_total' && row.rate !== null) total += row.rate;
  }
  if (prev) push(rateHistory, total, RATE_POINTS);
  const fmt = (v) => (v === null ? '…' : v.toFixed(v < 10 ? 1 : 0));
  const sorted = (rows) => rows.sort((a, b) => (b.rate || 0) - (a.rate || 0) || b.value - a.value);
  const section = (title, head, rows, cells) => [el('h2', null, title),
    table([...head, ['per second', 'n'], ['total', 'n']], sorted(rows).map((x) =>
      el('tr', null, cells(x).map((c) => el('td', null, c)), el('td', { class: 'n rate' }, fmt(x.rate)), el('td', { class: 'n' }, x.value))))];
  $('traffic').replaceChildren(
    el('div', { class: 'headline' },
      el('span', { class: 'big' }, fmt(prev ? total : null)), ' requests/s',
      sparkline(rateHistory, 240, 36, 'requests/s, last ' + rateHistory.length + ' s'),
      el('span', { class: 'hint' }, `rates over the last ${dt ? dt.toFixed(1) : '–'} s, from this node's /metrics`)),
    el('div', { class: 'cols' },
      el('div', null, ...section('Requests by method and route', ['method', 'route'], groups.sipdispatch_sip_requests_total,
        (x) => [x.labels.method, x.labels.route || '(none matched)'])),
      el('div', null, ...section('Replies by class', ['class'], groups.sipdispatch_sip_replies_total, (x) => [x.labels.class]))),
    ...section('Selections by destination', ['set', 'URI'], groups.sipdispatch_selections_total, (x) => [x.labels.set, x.labels.uri]));
}

// ---- start -------------------------------------------------------------------

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  showPage();
});
$('logout').addEventListener('click', () => showLogin('Logged out.'));
$('error-close').addEventListener('click', () => { $('error').hidden = true; });
$('reload').addEventListener('click', () => act('Reload the destinations from the source?', 'dispatcher.reload'));
$('add-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const set = Number($('add-set').value), uri = $('add-uri').value.trim();
  const params = [set, uri, Number($('add-flags').value || 0), Number($('add-prio').value || 0)];
  const attrs = $('add-attrs').value.trim();
  if (attrs) params.push(attrs);
  if (await act(`Add ${uri} to set ${set}?`, 'dispatcher.add', ...params)) $('add-form').reset();
});
window.addEventListener('hashchange', () => { if ($('login').hidden) showPage(); });

// Without a token in this tab, try without one: a loopback client of a node
// without api.token_file needs none; a 401 brings up the login form.
showPage();
