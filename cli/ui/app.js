// The shoal dashboard: a page of `shoal ui`. Reads go to /api/team/...
// (the daemon's answers, passed through); every change is one intent
// POSTed to /api/act, which the `shoal ui` process prepares, signs with the
// member's key and submits. The page never holds a key or a secret value.
// Everything is built with DOM calls and textContent (no HTML strings), and
// nothing is inline, so the strict Content-Security-Policy holds.
'use strict';

const state = { csrf: null, view: null, busy: false, again: false, keep: false };

// ------------------------------------------------------------ helpers

/** Builds an element: h('td', {class: 'x'}, 'text', child...). */
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const k of kids.flat(Infinity)) {
    if (k === null || k === undefined || k === false) continue;
    el.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return el;
}

const enc = encodeURIComponent;
const short = (s) => (s ? String(s).slice(0, 8) : '–');
const dash = (s) => (s === null || s === undefined || s === '' ? '–' : String(s));

function when(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  return d.toLocaleString();
}

function ago(ms) {
  if (ms === null || ms === undefined) return 'never';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** CPU load as `node list` prints it: the busy share of all CPUs. */
function cpu(l) {
  return `${Math.round(l.cpu_permille / 10)}%`;
}

/** `used/total` as `node list` prints it (`41% of 7.6G`), with a meter. */
function ratio(what, used, total) {
  if (!total) return '–';
  const pct = Math.round((used * 100) / total);
  return h('span', { class: 'load', 'data-load': what },
    h('meter', { min: 0, max: 100, value: pct, 'aria-hidden': 'true' }),
    ` ${pct}% of ${(total / 2 ** 30).toFixed(1)}G`);
}

function badge(status) {
  const word = String(status || '–');
  const cls = 's-' + word.split(':')[0].replace(/[^a-z-]/g, '');
  return h('span', { class: `badge ${cls}`, 'data-status': word }, word);
}

/** A table: cols are [header, cell(row)] pairs; rows collapse to cards on phones. */
function table(label, cols, rows, empty) {
  if (!rows.length) return h('p', { class: 'muted' }, empty || 'None yet.');
  return h('div', { class: 'table-wrap' },
    h('table', { class: 'collapse', 'aria-label': label },
      h('thead', {}, h('tr', {}, cols.map(([name]) => h('th', { scope: 'col' }, name)))),
      h('tbody', {}, rows.map((r) => h('tr', {},
        cols.map(([name, cell]) => {
          const v = cell(r);
          return h('td', { 'data-label': name }, v instanceof Node ? v : dash(v));
        }))))));
}

function facts(pairs) {
  return h('dl', { class: 'facts' },
    pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v instanceof Node ? v : dash(v))]));
}

/** A labelled input; `opts` are attributes of the input. */
function field(label, opts) {
  const input = h(opts.tag || 'input', Object.assign({ 'aria-label': label }, opts, { tag: null, options: null }));
  if (opts.options) {
    for (const o of opts.options) {
      const [value, text] = Array.isArray(o) ? o : [o, o];
      input.append(h('option', { value }, text));
    }
  }
  return h('label', {}, h('span', {}, label), input);
}

function lines(text) {
  return String(text || '').split('\n').map((l) => l.trim()).filter((l) => l);
}

function show(id, text) {
  const el = document.getElementById(id);
  el.textContent = text || '';
  el.hidden = !text;
}

// ------------------------------------------------------------ API

async function answer(r) {
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) {
    const msg = body && body.error ? body.error : `${r.status} ${r.statusText}`;
    const e = new Error(msg);
    e.status = r.status;
    throw e;
  }
  return body;
}

async function get(path) {
  return answer(await fetch(path, { credentials: 'same-origin', headers: { accept: 'application/json' } }));
}

const team = (tail) => get(tail ? '/api/team/' + tail : '/api/team');

/** Asks for one change; shows what the command printed, or the refusal. */
async function act(intent, button) {
  show('flash', '');
  show('problem', '');
  if (button) button.disabled = true;
  try {
    const r = await fetch('/api/act', {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json', 'x-shoal-csrf': state.csrf },
      body: JSON.stringify(intent),
    });
    const done = await answer(r);
    show('flash', done.output.trim() || 'Done.');
    refresh();
    return done.output;
  } catch (e) {
    show('problem', `Refused: ${e.message}`);
    return null;
  } finally {
    if (button) button.disabled = false;
  }
}

/** A form whose submit runs `run(values)` (an object of its named fields). */
function form(cls, label, kids, submit, run) {
  const f = h('form', { class: cls, 'aria-label': label }, kids,
    h('button', { type: 'submit' }, submit));
  f.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const values = Object.fromEntries(new FormData(f).entries());
    const out = await run(values, f.querySelector('button[type=submit]'));
    if (out !== null && out !== undefined) f.reset();
  });
  return f;
}

function button(text, cls, onclick, extra) {
  return h('button', Object.assign({ type: 'button', class: cls, onclick }, extra || {}), text);
}

function confirmThen(question, intent) {
  return async (ev) => {
    if (window.confirm(question)) await act(intent, ev.currentTarget);
  };
}

// ------------------------------------------------------------ views
// A view mounts its fixed parts (headings, forms) once and fills its data
// parts on every refresh, so a form being typed into is never rebuilt.

function section(title, ...kids) {
  return h('section', { class: 'card', 'aria-label': title }, h('h2', {}, title), ...kids);
}

function slot(label) {
  return h('div', { 'aria-live': 'polite', 'aria-label': label });
}

function fill(el, ...kids) {
  el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined));
}

const views = {};

views.overview = () => {
  const teamBox = slot('Team');
  const nodes = slot('Nodes');
  const counts = slot('Deployments by status');
  return {
    live: true,
    mount: (root) => root.append(h('h1', {}, 'Overview'),
      section('Team', teamBox), section('Nodes', nodes), section('Deployments', counts)),
    refresh: async () => {
      const [info, status, list, deps] = await Promise.all([
        team(''), team('status'), team('nodes'), team('deployments')]);
      fill(teamBox, facts([
        ['Name', info.name], ['Id', h('span', { class: 'mono' }, info.id)],
        ['Members', info.members], ['Nodes', info.nodes], ['Ops', info.ops],
        ['State hash', h('span', { class: 'mono' }, short(info.state_hash))]]));
      const byKey = Object.fromEntries(list.map((n) => [n.key, n]));
      fill(nodes, table('Nodes', [
        ['Name', (n) => h('span', {}, n.name, n.this_node ? h('span', { class: 'muted' }, ' (this node)') : null)],
        ['Status', (n) => badge(n.status)],
        ['Runtime', (n) => (byKey[n.key] || {}).runtime],
        ['Version', (n) => n.agent_version || (byKey[n.key] || {}).agent_version],
        ['Last seen', (n) => (n.this_node ? 'now' : ago(n.seen_ms_ago))],
        // Host load from the node's latest fresh heartbeat, as `node list` shows it.
        ['CPU', (n) => (n.load ? h('span', { class: 'load', 'data-load': 'cpu' },
          h('meter', { min: 0, max: 1000, value: n.load.cpu_permille, 'aria-hidden': 'true' }), ` ${cpu(n.load)} of ${n.load.cpus} CPU${n.load.cpus === 1 ? '' : 's'}`) : '–')],
        ['Memory', (n) => (n.load ? ratio('memory', n.load.memory_used_bytes, n.load.memory_total_bytes) : '–')],
        ['Disk', (n) => (n.load ? ratio('disk', n.load.disk_used_bytes, n.load.disk_total_bytes) : '–')],
        ['Running', (n) => n.running],
        ['Addresses', (n) => h('span', { class: 'mono' }, (n.addresses || []).join(' ') || '–')],
      ], status, 'No nodes.'));
      const by = {};
      for (const d of deps) by[d.status] = (by[d.status] || 0) + 1;
      fill(counts, Object.keys(by).length
        ? h('p', {}, Object.entries(by).map(([s, n]) => h('span', {}, badge(s), ` ${n}  `)))
        : h('p', { class: 'muted' }, 'No deployments yet.'), h('p', {}, h('a', { href: '#/deployments' }, 'All deployments')));
    },
  };
};

/** Selects filled from the team: products → versions, and live nodes. */
function deployForm(fixed) {
  const product = field('Product', { tag: 'select', name: 'product', required: true });
  const version = field('Version', { tag: 'select', name: 'version', required: true });
  const node = field('Node', { tag: 'select', name: 'node', required: true });
  const psel = product.querySelector('select');
  const vsel = version.querySelector('select');
  const nsel = node.querySelector('select');
  async function versions() {
    if (!psel.value) return;
    const p = await team('products/' + enc(psel.value));
    vsel.replaceChildren(...p.versions.map((v) => h('option', { value: v.name, selected: v.default }, v.name)));
  }
  psel.addEventListener('change', versions);
  const f = form('inline', 'Create a deployment', [
    fixed ? null : product, fixed ? null : version, node,
    field('Prefix', { name: 'prefix', required: true, pattern: '[a-z0-9]([a-z0-9\\-]*[a-z0-9])?', maxlength: 63, placeholder: 'prod' }),
    field('Env (K=V per line)', { tag: 'textarea', name: 'env', rows: 1 }),
    field('Note', { name: 'note' }),
  ], 'Create deployment', async (v, b) => {
    const out = await act({
      op: 'deploy.create',
      product: fixed ? fixed.product : v.product,
      version: fixed ? fixed.version : v.version,
      node: v.node, prefix: v.prefix, env: lines(v.env), note: v.note || '',
    }, b);
    const id = out && lines(out).pop();
    if (id) { state.keep = true; location.hash = '#/deployments/' + id; }
    return out;
  });
  f.load = async () => {
    const [products, nodes] = await Promise.all([fixed ? [] : team('products'), team('nodes')]);
    if (!fixed && psel.options.length !== products.length) {
      psel.replaceChildren(...products.map((p) => h('option', { value: p.name }, p.name)));
      await versions();
    }
    const live = nodes.filter((n) => !n.removed);
    if (nsel.options.length !== live.length) {
      nsel.replaceChildren(...live.map((n) => h('option', { value: n.name }, `${n.name} (${n.runtime})`)));
      const docker = live.find((n) => n.runtime !== 'none');
      if (docker) nsel.value = docker.name;
    }
  };
  return f;
}

views.deployments = () => {
  const list = slot('Deployments');
  const filter = h('select', { 'aria-label': 'Filter by status' },
    ['', 'preparing', 'in-progress', 'successful', 'failed', 'obsolete', 'downgraded']
      .map((s) => h('option', { value: s }, s || 'any status')));
  const create = deployForm(null);
  const view = {
    mount: (root) => root.append(h('h1', {}, 'Deployments'),
      section('All deployments', h('div', { class: 'actions' }, h('label', {}, 'Status ', filter)), list),
      section('New deployment', create)),
    refresh: async () => {
      const q = filter.value ? '?status=' + enc(filter.value) : '';
      const [deps] = await Promise.all([team('deployments' + q), create.load()]);
      fill(list, table('Deployments', [
        ['Id', (d) => h('a', { href: '#/deployments/' + d.id, class: 'mono' }, short(d.id))],
        ['Product', (d) => d.product], ['Version', (d) => d.version],
        ['Node', (d) => d.node], ['Prefix', (d) => d.prefix],
        ['Status', (d) => h('span', {}, badge(d.status), d.conflict ? ' (lost a race)' : '')],
        ['Tries', (d) => d.tries], ['Created', (d) => when(d.created_ms)],
      ], deps.slice().reverse(), 'No deployments.'));
    },
  };
  filter.addEventListener('change', () => view.refresh().catch(problem));
  return view;
};

views.deployment = (id) => {
  const head = slot('Deployment');
  const containers = slot('Containers');
  const live = slot('Live containers');
  const drift = slot('Expected and actual state');
  const log = h('pre', { class: 'log', id: 'logs', 'aria-label': 'Progress and container logs', tabindex: 0 }, 'Loading…');
  const logs = follower(id, log);
  const actions = h('div', { class: 'actions' });
  const copy = form('inline', 'Copy the deployment', [
    field('Node', { name: 'node', required: true }),
    field('Prefix', { name: 'prefix', required: true }),
  ], 'Copy', async (v, b) => {
    const out = await act({ op: 'deploy.copy', deployment: id, node: v.node, prefix: v.prefix }, b);
    const nid = out && lines(out).pop();
    if (nid) { state.keep = true; location.hash = '#/deployments/' + nid; }
    return out;
  });
  let d = null;
  actions.append(
    button('Start', '', (ev) => act({ op: 'deploy.start', deployment: id }, ev.currentTarget)),
    button('Roll back', 'secondary', (ev) => d && act({ op: 'deploy.rollback', product: d.product, node: d.node, prefix: d.prefix }, ev.currentTarget)),
    button('Delete', 'danger', confirmThen('Delete this deployment and its containers?', { op: 'deploy.delete', deployment: id })));
  return {
    live: true,
    leave: () => logs.close(),
    mount: (root) => root.append(h('h1', {}, 'Deployment ', h('span', { class: 'mono' }, short(id))),
      section('Status', head, actions), section('Containers at the end of the last try', containers),
      section('Expected and actual state', drift),
      section('Live containers on the node', live),
      section('Progress and logs', log), section('Copy to another node or prefix', copy)),
    refresh: async () => {
      try {
        d = await team('deployments/' + enc(id));
      } catch (e) {
        if (e.status === 404) { fill(head, h('p', {}, 'This deployment no longer exists. ', h('a', { href: '#/deployments' }, 'All deployments'))); return; }
        throw e;
      }
      fill(head, facts([
        ['Product', h('a', { href: `#/products/${enc(d.product || '')}` }, dash(d.product))],
        ['Version', d.version], ['Node', d.node], ['Prefix', d.prefix],
        ['Status', h('span', { id: 'deployment-status' }, badge(d.status))],
        ['Tries', h('span', { id: 'deployment-tries' }, String(d.tries))],
        ['Reason', d.reason], ['Note', d.note], ['Protected', d.protected ? 'yes' : 'no'],
        ['Frozen config', d.frozen], ['Secrets', (d.secrets || []).join(', ')],
        ['Created', `${when(d.created_ms)} by ${dash(d.created_by)}`],
        ['Last try', (d.events || []).length ? h('ol', { class: 'events' }, d.events.map((e) => h('li', {}, e))) : null]]));
      const rows = Object.entries(d.containers || {}).map(([name, c]) => ({ name, ...c }));
      fill(containers, table('Containers', [
        ['Container', (c) => c.name], ['State', (c) => badge(c.state)],
        ['Exit code', (c) => c.exit_code], ['Image', (c) => h('span', { class: 'mono' }, c.image)],
      ], rows, 'No container has run yet.'));
      // Expected against actual, as `deploy show` prints it (the daemon
      // sets them side by side from the node's signed live report).
      if (d.live) {
        fill(drift, h('p', { class: 'muted' }, `From the node's live report of ${ago(d.live.seen_ms_ago)}: `,
          h('span', { id: 'drift-summary' }, badge(d.live.drift ? 'drift' : 'ok'))),
        table('Expected and actual', [
          ['Container', (c) => c.container], ['Expected', (c) => c.expected],
          ['Actual', (c) => h('span', { 'data-actual': c.actual },
            c.actual, c.exit_code !== null && c.exit_code !== undefined ? ` (${c.exit_code})` : '', c.health ? ` ${c.health}` : '')],
          ['Restarts', (c) => String(c.restarts)],
          ['Drift', (c) => h('span', { 'data-drift': c.drift ? 'yes' : 'no', 'data-container': c.container }, badge(c.drift ? 'drift' : 'ok'))],
        ], d.live.containers, 'No container has run yet.'));
      } else {
        fill(drift, h('p', { class: 'muted', id: 'drift-summary' }, d.status === 'successful'
          ? 'No live state: the node\'s heartbeat is not fresh or it sends no live reports (see the overview).'
          : 'Nothing is expected to run until the deployment is successful.'));
      }
      logs.open();
      try {
        const all = await team(`nodes/${enc(d.node_key)}/containers?prefix=${enc(d.prefix)}&fresh=true`);
        const mine = all.filter((c) => c.deployment === d.id);
        const verb = (c, action, cls) => button(action[0].toUpperCase() + action.slice(1), cls,
          (ev) => act({ op: 'container.command', node: d.node_key, container: c.name, action }, ev.currentTarget),
          { 'aria-label': `${action} container ${c.name}` });
        fill(live, table('Live containers', [
          ['Name', (c) => h('span', { class: 'mono' }, c.name)], ['State', (c) => badge(c.state && c.state.state)],
          ['Status', (c) => c.status], ['Try', (c) => c.try_number], ['Init of', (c) => c.init],
          ['Ports', (c) => (c.ports || []).map((p) => `${dash(p.host_port)}→${p.internal}/${p.protocol}`).join(' ')],
          ['', (c) => h('span', { class: 'actions' }, verb(c, 'restart', 'secondary'), verb(c, 'stop', 'secondary'), verb(c, 'start', 'secondary'))],
        ], mine, 'No container of this deployment runs on the node.'));
      } catch (e) {
        fill(live, h('p', { class: 'muted' }, `The node did not answer: ${e.message}`));
      }
    },
  };
};

/** Lines of one source the log view keeps. */
const LOG_KEEP = 2000;

/**
 * The deployment's progress and its containers' output, followed live
 * (server-sent events from /api/logs/<id>, the follow sessions of
 * `deploy logs --follow`). A source's lines arrive in order; a `reset`
 * chunk replaces that source's lines (a container followed again after a
 * restart starts from its last lines). The feed is opened on the first
 * refresh and again on a refresh after it failed.
 */
function follower(id, pre) {
  let es = null;
  const sources = new Map([['progress', []]]);
  function render() {
    const out = [];
    for (const [src, ls] of sources) {
      for (const l of ls) out.push(src === 'progress' ? l : `${src} | ${l}`);
    }
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = out.length ? out.join('\n') : '(no lines yet)';
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
  return {
    open() {
      if (es) return;
      es = new EventSource('/api/logs/' + enc(id));
      es.addEventListener('open', () => {
        // A reopened feed starts again from each source's last lines.
        for (const k of sources.keys()) sources.set(k, []);
        render();
      });
      es.addEventListener('lines', (ev) => {
        const c = JSON.parse(ev.data);
        const kept = c.reset ? [] : (sources.get(c.source) || []);
        const next = kept.concat(c.lines);
        sources.set(c.source, next.length > LOG_KEEP ? next.slice(-LOG_KEEP) : next);
        render();
      });
      es.addEventListener('failed', (ev) => {
        es.close();
        es = null;
        pre.textContent += `\n(logs unavailable: ${ev.data})`;
      });
    },
    close() {
      if (es) es.close();
      es = null;
    },
  };
}

views.products = () => {
  const list = slot('Products');
  const create = form('inline', 'Create a product', [
    field('Name', { name: 'name', required: true }),
    field('Kind', { tag: 'select', name: 'kind', options: [['complex', 'complex (versions)'], ['simple', 'simple (one rolling version)']] }),
    field('Description', { name: 'description' }),
  ], 'Create product', (v, b) => act({ op: 'product.create', name: v.name, simple: v.kind === 'simple', description: v.description || '' }, b));
  return {
    mount: (root) => root.append(h('h1', {}, 'Products'), section('All products', list), section('New product', create)),
    refresh: async () => {
      const ps = await team('products');
      fill(list, table('Products', [
        ['Name', (p) => h('a', { href: '#/products/' + enc(p.name) }, p.name)],
        ['Kind', (p) => p.kind], ['Default version', (p) => p.default_version],
        ['Versions', (p) => p.versions], ['Deployments', (p) => p.deployments],
        ['Description', (p) => p.description],
      ], ps, 'No products yet.'));
    },
  };
};

views.product = (name) => {
  const info = slot('Product');
  const list = slot('Versions');
  const create = form('inline', 'Create a version', [
    field('Name', { name: 'name', required: true, placeholder: '1.0.0' }),
    field('Kind', { tag: 'select', name: 'kind', options: [['incremental', 'incremental'], ['rolling', 'rolling']] }),
    field('Changelog', { name: 'changelog' }),
  ], 'Create version', (v, b) => act({ op: 'version.create', product: name, name: v.name, rolling: v.kind === 'rolling', changelog: v.changelog || '' }, b));
  // The description and a changelog are edited in place: each text starts
  // as saved and a live refresh leaves it alone once typed into. A save
  // keeps the form as it is (no reset) and marks the text as saved.
  const edited = (area) => area.addEventListener('input', () => { area.dataset.dirty = '1'; });
  const saved = (area) => (out) => { if (out !== null) area.dataset.dirty = ''; return null; };
  const darea = h('textarea', { name: 'description', rows: 2, 'aria-label': 'Description' });
  const describe = form('stack', 'Edit the description', [h('label', {}, h('span', {}, 'Description'), darea)],
    'Save description', (v, b) => act({ op: 'product.update', name, description: v.description || '' }, b).then(saved(darea)));
  const wsel = h('select', { name: 'version', required: true, 'aria-label': 'Version' });
  const carea = h('textarea', { name: 'changelog', rows: 3, 'aria-label': 'Changelog' });
  const changelog = form('stack', 'Edit a version\'s changelog', [
    h('label', {}, h('span', {}, 'Version'), wsel), h('label', {}, h('span', {}, 'Changelog'), carea),
  ], 'Save changelog', (v, b) => act({ op: 'version.update', product: name, version: v.version, changelog: v.changelog || '' }, b).then(saved(carea)));
  edited(darea);
  edited(carea);
  let p = null;
  const pickChangelog = () => {
    const v = p && p.versions.find((x) => x.name === wsel.value);
    carea.value = v ? v.changelog : '';
    carea.dataset.dirty = '';
  };
  wsel.addEventListener('change', pickChangelog);
  const increase = form('inline', 'Increase a version', [
    field('From version', { name: 'version', required: true }),
    field('New name', { name: 'new_name', required: true }),
  ], 'Increase', (v, b) => act({ op: 'version.increase', product: name, version: v.version, new_name: v.new_name }, b));
  return {
    mount: (root) => root.append(h('h1', {}, 'Product ', name), section('Product', info,
      h('div', { class: 'actions' }, button('Remove product', 'danger', confirmThen(`Remove product ${name} with its versions and deployments?`, { op: 'product.remove', name })))),
    h('div', { class: 'grid2' }, section('Description', describe), section('Changelog', changelog)),
    section('Versions', list), section('New version', create), section('Increase (a child of an incremental version)', increase)),
    refresh: async () => {
      p = await team('products/' + enc(name));
      fill(info, facts([['Kind', p.kind], ['Default version', p.default_version],
        ['Description', h('span', { id: 'product-description' }, dash(p.description))], ['Created', when(p.created_ms)]]));
      if (!darea.dataset.dirty) darea.value = p.description;
      const names = p.versions.map((v) => v.name);
      if (Array.from(wsel.options).map((o) => o.value).join() !== names.join()) {
        const keep = wsel.value;
        wsel.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
        if (names.includes(keep)) wsel.value = keep;
        carea.dataset.dirty = '';
      }
      if (!carea.dataset.dirty) pickChangelog();
      fill(list, table('Versions', [
        ['Name', (v) => h('a', { href: `#/products/${enc(name)}/versions/${enc(v.name)}` }, v.name)],
        ['Kind', (v) => v.kind], ['Default', (v) => (v.default ? 'yes' : button('Make default', 'secondary', (ev) => act({ op: 'version.default', product: name, version: v.name }, ev.currentTarget), { 'aria-label': `Make ${v.name} the default version` }))],
        ['Frozen', (v) => v.frozen], ['Parent', (v) => v.parent], ['Child', (v) => v.child],
        ['Images', (v) => v.images], ['Deployments', (v) => v.deployments], ['Changelog', (v) => v.changelog],
        ['', (v) => button('Remove', 'danger', confirmThen(`Remove version ${v.name}?`, { op: 'version.remove', product: name, version: v.name }), { 'aria-label': `Remove version ${v.name}` })],
      ], p.versions, 'No versions yet.'));
    },
  };
};

views.version = (product, version) => {
  const info = slot('Version');
  const images = slot('Images');
  const registry = field('Registry', { tag: 'select', name: 'registry' });
  const rsel = registry.querySelector('select');
  const add = form('inline', 'Add an image', [
    field('Image reference', { name: 'reference', required: true, placeholder: 'registry.example:5000/team/app:1.0', size: 40 }),
    registry,
    field('Container name', { name: 'name', placeholder: 'from the image name' }),
  ], 'Add image', (v, b) => act({ op: 'image.add', product, version, reference: v.reference, registry: v.registry || null, name: v.name || null }, b));
  const container = field('Container', { tag: 'select', name: 'container', required: true });
  const csel = container.querySelector('select');
  const config = form('stack', 'Edit an image config', [
    container,
    field('Command (one argument per line; replaces the command)', { tag: 'textarea', name: 'cmd', rows: 3 }),
    field('Env (K=V per line)', { tag: 'textarea', name: 'env', rows: 2 }),
    field('Ports (EXT:INT[/udp] per line)', { tag: 'textarea', name: 'ports', rows: 1 }),
    field('Restart policy', { tag: 'select', name: 'restart', options: [['', 'unchanged'], 'no', 'always', 'unless-stopped', 'on-failure'] }),
  ], 'Save config', (v, b) => act({
    op: 'image.config', product, version, container: v.container,
    cmd: String(v.cmd || '').split('\n').map((l) => l.replace(/\r$/, '')).filter((l) => l !== ''),
    env: lines(v.env), ports: lines(v.ports), restart: v.restart || null,
  }, b));
  const deploy = deployForm({ product, version });
  return {
    mount: (root) => root.append(
      h('h1', {}, h('a', { href: '#/products/' + enc(product) }, product), ' ', version),
      section('Version', info), section('Images (in start order)', images),
      h('div', { class: 'grid2' }, section('Add an image', add), section('Container config', config)),
      section('Deploy this version', deploy)),
    refresh: async () => {
      const [v, regs] = await Promise.all([team(`products/${enc(product)}/versions/${enc(version)}`), team('registries'), deploy.load()]);
      fill(info, facts([['Kind', v.kind], ['Default', v.default ? 'yes' : 'no'], ['Frozen', v.frozen || 'no (mutable)'],
        ['Parent', v.parent], ['Child', v.child], ['Changelog', v.changelog], ['Deployments', v.deployments]]));
      fill(images, table('Images', [
        ['Container', (i) => i.name], ['Image', (i) => h('span', { class: 'mono' }, i.ref)], ['Registry', (i) => i.registry],
        ['Command', (i) => h('span', { class: 'mono' }, [].concat((i.config && i.config.command) || [], (i.config && i.config.args) || []).join(' ') || '–')],
        ['Env', (i) => h('span', { class: 'mono' }, Object.entries((i.config && i.config.env) || {}).map(([k, x]) => `${k}=${x}`).join(' ') || '–')],
        ['Ports', (i) => ((i.config && i.config.ports) || []).map((p) => `${dash(p.external)}:${p.internal}`).join(' ')],
        ['Config', (i) => h('details', {}, h('summary', {}, 'effective config'), h('pre', { class: 'log' }, JSON.stringify(i.config, null, 2)))],
        ['', (i) => button('Remove', 'danger', confirmThen(`Remove image ${i.name}?`, { op: 'image.remove', product, version, container: i.name }), { 'aria-label': `Remove image ${i.name}` })],
      ], v.images, 'No images yet: add one below.'));
      if (rsel.options.length !== regs.length + 1) {
        rsel.replaceChildren(h('option', { value: '' }, 'from the reference'), ...regs.map((r) => h('option', { value: r.name }, `${r.name} (${r.kind})`)));
      }
      const names = v.images.map((i) => i.name);
      if (Array.from(csel.options).map((o) => o.value).join() !== names.join()) {
        csel.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
      }
    },
  };
};

views.audit = () => {
  const list = slot('Audit log');
  const result = h('div', { id: 'verify-result', 'aria-live': 'polite' });
  const filters = { author: '', action: '', target: '' };
  const view = {
    mount: (root) => root.append(h('h1', {}, 'Audit log'),
      section('Verify', h('p', { class: 'muted' }, 'Checks every signature and every log\'s hash chain on this replica and in its store.'),
        h('div', { class: 'actions' }, button('Verify the log', '', async (ev) => {
          const b = ev.currentTarget;
          b.disabled = true;
          try {
            const v = await team('audit/verify');
            fill(result, h('p', {}, badge(v.ok ? 'ok' : 'bad'), ` ${v.ok ? 'The chain verifies' : 'Problems found'}: ${v.ops} ops in ${v.logs} logs (${v.stored_ops} stored).`),
              v.problems.length ? h('ul', {}, v.problems.map((p) => h('li', {}, `${p.kind}: ${p.message}`))) : null);
          } catch (e) { problem(e); } finally { b.disabled = false; }
        })), result),
      section('Entries', form('inline', 'Filter the audit log', [
        field('Author', { name: 'author' }), field('Action', { name: 'action', placeholder: 'deployment.' }), field('Target', { name: 'target' }),
      ], 'Filter', async (v) => { Object.assign(filters, v); await view.refresh(); return null; }), list)),
    refresh: async () => {
      const q = Object.entries(filters).filter(([, x]) => x).map(([k, x]) => `${k}=${enc(x)}`).join('&');
      const entries = await team('audit' + (q ? '?' + q : ''));
      fill(list, table('Audit entries', [
        ['Time', (e) => when(e.time_ms)], ['Author', (e) => e.author_name || short(e.author)],
        ['Action', (e) => h('span', { class: 'mono' }, e.action)], ['What', (e) => e.what],
        ['Status', (e) => badge(e.status)], ['Op', (e) => h('span', { class: 'mono' }, short(e.hash))],
      ], entries.slice().reverse(), 'No entries.'));
    },
  };
  return view;
};

views.members = () => {
  const members = slot('Members');
  const invites = slot('Invites');
  const pending = {};
  const ticket = h('div', { 'aria-live': 'polite' });
  const create = form('inline', 'Create an invite', [
    field('Role', { tag: 'select', name: 'role', options: ['user', 'admin'] }),
    field('Expires in', { name: 'expires', value: '24h', pattern: '[0-9]+[smhd]', title: 'e.g. 30m, 24h, 7d' }),
  ], 'Create invite', async (v, b) => {
    const out = await act({ op: 'invite.create', role: v.role, expires: v.expires || '24h' }, b);
    if (out) {
      const t = lines(out).pop();
      const area = h('textarea', { class: 'ticket', readonly: true, rows: 5, id: 'ticket', 'aria-label': 'Invite ticket' });
      area.value = t;
      fill(ticket, h('p', {}, 'Give this ticket to the new member (it works once): ', h('span', { class: 'muted' }, 'shoal team join TICKET')), area,
        button('Copy ticket', 'secondary', async () => {
          area.select();
          try { await navigator.clipboard.writeText(t); show('flash', 'Ticket copied.'); } catch (_) { show('flash', 'Select the ticket and copy it.'); }
        }));
    }
    return out;
  });
  return {
    mount: (root) => root.append(h('h1', {}, 'Members and invites'), section('Members', members),
      section('Invite a member', create, ticket), section('Invites', invites)),
    refresh: async () => {
      const [ms, is] = await Promise.all([team('members'), team('invites')]);
      const role = (m) => {
        if (m.removed || m.role === 'owner') return m.role;
        // A role picked but not applied yet survives the live refreshes.
        const picked = pending[m.key] || m.role;
        const sel = h('select', { 'aria-label': `Role of ${m.name}`, onchange: () => { pending[m.key] = sel.value; } },
          ['admin', 'user'].map((r) => h('option', { value: r, selected: r === picked }, r)));
        return h('span', {}, sel, ' ', button('Change', 'secondary', async (ev) => {
          if (await act({ op: 'member.role', member: m.key, role: sel.value }, ev.currentTarget) !== null) delete pending[m.key];
        }, { 'aria-label': `Change the role of ${m.name}` }));
      };
      fill(members, table('Members', [
        ['Name', (m) => m.name], ['Email', (m) => m.email], ['Key', (m) => h('span', { class: 'mono' }, short(m.key))],
        ['Role', role], ['Joined', (m) => when(m.joined && m.joined.ms)],
        ['', (m) => (m.removed ? badge('removed') : m.role === 'owner' ? null : button('Remove', 'danger', confirmThen(`Remove ${m.name} from the team?`, { op: 'member.remove', member: m.key }), { 'aria-label': `Remove member ${m.name}` }))],
      ], ms));
      fill(invites, table('Invites', [
        ['Id', (i) => h('span', { class: 'mono' }, short(i.id))], ['Kind', (i) => i.kind], ['Grants', (i) => i.grants],
        ['Created by', (i) => i.creator_name], ['Expires', (i) => when(i.expires_ms)],
        ['State', (i) => (i.revoked ? 'revoked' : i.used_by.length ? `used by ${i.used_by.length}` : i.expires_ms < Date.now() ? 'expired' : 'open')],
        ['', (i) => (i.revoked ? null : button('Revoke', 'danger', confirmThen('Revoke this invite?', { op: 'invite.revoke', id: i.id }), { 'aria-label': `Revoke invite ${short(i.id)}` }))],
      ], is.slice().reverse(), 'No invites.'));
    },
  };
};

views.registries = () => {
  const list = slot('Registries');
  const tags = h('div', { 'aria-live': 'polite' });
  const add = form('inline', 'Add a registry', [
    field('Name', { name: 'name', required: true }),
    field('Kind', { tag: 'select', name: 'kind', options: ['v2', 'github', 'gitlab', 'unchecked', 'hub'] }),
    field('URL', { name: 'url', placeholder: 'registry.example:5000' }),
    field('Namespace', { name: 'namespace' }),
  ], 'Add registry', (v, b) => act({ op: 'registry.add', name: v.name, kind: v.kind, url: v.url || null, namespace: v.namespace || null }, b));
  const browse = form('inline', 'List an image\'s tags', [
    field('Registry', { name: 'registry', required: true }), field('Image', { name: 'image', required: true, placeholder: 'team/app' }),
  ], 'List tags', async (v, b) => {
    b.disabled = true;
    try {
      const t = await team(`registries/${enc(v.registry)}/tags?image=${enc(v.image)}`);
      fill(tags, t.tags.length ? h('ul', {}, t.tags.map((x) => h('li', { class: 'mono' }, x))) : h('p', { class: 'muted' }, 'No tags.'));
    } catch (e) { problem(e); } finally { b.disabled = false; }
    return null;
  });
  return {
    mount: (root) => root.append(h('h1', {}, 'Registries'), section('All registries', list),
      section('Add a registry', h('p', { class: 'muted' }, 'A registry that needs a password is added from the CLI (shoal registry add NAME --user USER --password-stdin): the password is never typed into this page.'), add),
      section('Tags', browse, tags)),
    refresh: async () => {
      const rs = await team('registries');
      fill(list, table('Registries', [
        ['Name', (r) => r.name], ['Kind', (r) => r.kind], ['URL', (r) => r.url], ['Namespace', (r) => r.namespace],
        ['User', (r) => r.user], ['Password', (r) => (r.password ? `sealed for ${(r.sealed_for || []).join(', ') || 'the team key'}` : 'none')],
        ['Images', (r) => r.images],
        ['', (r) => (r.builtin ? null : button('Remove', 'danger', confirmThen(`Remove registry ${r.name}?`, { op: 'registry.remove', name: r.name }), { 'aria-label': `Remove registry ${r.name}` }))],
      ], rs));
    },
  };
};

// ------------------------------------------------------------ routing and live updates

function route() {
  const parts = (location.hash.replace(/^#\/?/, '') || '').split('/').map(decodeURIComponent);
  const [a, b, c, d] = parts;
  if (a === 'deployments' && b) return ['deployments', views.deployment(b)];
  if (a === 'deployments') return ['deployments', views.deployments()];
  if (a === 'products' && b && c === 'versions' && d) return ['products', views.version(b, d)];
  if (a === 'products' && b) return ['products', views.product(b)];
  if (a === 'products') return ['products', views.products()];
  if (a === 'audit') return ['audit', views.audit()];
  if (a === 'members') return ['members', views.members()];
  if (a === 'registries') return ['registries', views.registries()];
  return ['', views.overview()];
}

function problem(e) {
  show('problem', e && e.message ? e.message : String(e));
}

async function refresh() {
  if (!state.view) return;
  if (state.busy) { state.again = true; return; }
  state.busy = true;
  try {
    await state.view.refresh();
  } catch (e) {
    problem(e);
  } finally {
    state.busy = false;
    if (state.again) { state.again = false; refresh(); }
  }
}

function navigate() {
  const [section, view] = route();
  for (const a of document.querySelectorAll('#nav a')) {
    const target = a.getAttribute('href').replace(/^#\/?/, '');
    if (target === section) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  // What an action that led here said stays shown.
  if (!state.keep) {
    show('flash', '');
    show('problem', '');
  }
  state.keep = false;
  const main = document.getElementById('main');
  main.replaceChildren();
  if (state.view && state.view.leave) state.view.leave();
  state.view = view;
  view.mount(main);
  document.title = `${main.querySelector('h1').textContent} · shoal`;
  // A screen reader starts reading the new page, not the old place.
  if (state.mounted) main.focus({ preventScroll: true });
  state.mounted = true;
  refresh();
}

/** How often a page showing what heartbeats carry (load, liveness,
 * drift; they change without an op) reads again while it is visible. */
const LIVE_EVERY = 5000;

function listen() {
  // Ops arrive through the change feed (the daemon's op count, one long
  // poll at a time): a page refreshes when the team changed, not on a timer.
  const es = new EventSource('/api/events');
  es.addEventListener('change', () => refresh());
  const live = () => state.view && state.view.live && document.visibilityState === 'visible';
  setInterval(() => { if (live()) refresh(); }, LIVE_EVERY);
  document.addEventListener('visibilitychange', () => { if (live()) refresh(); });
  es.addEventListener('daemon', (ev) => {
    show('banner', ev.data ? `The daemon does not answer: ${ev.data}` : '');
    if (!ev.data) refresh();
  });
  es.onerror = () => show('banner', 'Lost the connection to `shoal ui`; retrying…');
  es.onopen = () => show('banner', '');
}

async function start() {
  let s;
  try {
    s = await get('/api/session');
  } catch (e) {
    document.getElementById('main').replaceChildren(h('h1', {}, 'Not logged in'), h('p', {}, e.message));
    return;
  }
  state.csrf = s.csrf;
  document.getElementById('team-name').textContent = `shoal · ${s.team_name}`;
  document.getElementById('me').textContent = `signed in as ${s.me_name} (${short(s.me_key)})`;
  window.addEventListener('hashchange', navigate);
  navigate();
  listen();
}

document.addEventListener('DOMContentLoaded', start);
