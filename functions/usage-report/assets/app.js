// Tollgate usage dashboard: reads GET /v1/usage and GET /v1/usage/events with the tenant's key
// and draws the charts as inline SVG. No framework, nothing loaded from elsewhere.
//
// The key lives in memory (and in sessionStorage only when the tenant asks); it is sent only
// as an Authorization header, never in a URL. Everything from the API reaches the page through
// textContent or setAttribute, never as HTML.
'use strict';

(function () {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const STORAGE_KEY = 'tollgate.usage.key';
  const PALETTE = ['#2f6fde', '#e07b24', '#2a9d6f', '#b44bc4', '#d1495b', '#6c7a89', '#c9a227', '#17a2b8'];
  const PERCENTILE_COLORS = { p50: '#7fa7ee', p95: '#2f6fde', p99: '#1b3f85' };
  const W = 640;
  const H = 240;
  const PAD = { left: 64, right: 12, top: 12, bottom: 34 };

  let apiKey = null;
  let nextCursor = null;

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------------------------------
  // API
  // ------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // `path` is relative to the page, so a stage prefix (/prod/dashboard) carries over.
  async function api(path, params) {
    const url = new URL(path, document.baseURI);
    for (const [name, value] of Object.entries(params || {})) {
      url.searchParams.set(name, value);
    }
    const response = await fetch(url, {
      headers: { Authorization: 'Bearer ' + apiKey, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
      referrerPolicy: 'no-referrer',
    });
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      body = null;
    }
    if (!response.ok) {
      const message = body && body.error && body.error.message
        ? String(body.error.message)
        : 'request failed with status ' + response.status;
      throw new ApiError(response.status, message);
    }
    return body;
  }

  // ------------------------------------------------------------------------------------------
  // Formatting
  // ------------------------------------------------------------------------------------------

  const integer = new Intl.NumberFormat('en-US');
  const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

  function percent(rate) {
    return (Number(rate) * 100).toFixed(1) + ' %';
  }

  function day(iso) {
    return String(iso).slice(0, 10);
  }

  function shortDay(iso) {
    return String(iso).slice(5, 10);
  }

  function isoDate(date) {
    return date.toISOString().slice(0, 10);
  }

  // ------------------------------------------------------------------------------------------
  // SVG helpers
  // ------------------------------------------------------------------------------------------

  function svg(tag, attrs, text) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      el.setAttribute(name, String(value));
    }
    if (text !== undefined) {
      el.textContent = String(text);
    }
    return el;
  }

  function withTitle(el, text) {
    el.appendChild(svg('title', {}, text));
    return el;
  }

  function canvas(figureId) {
    const plot = $(figureId).querySelector('.plot');
    plot.replaceChildren();
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    root.setAttribute('aria-label', $(figureId).querySelector('figcaption').textContent);
    plot.appendChild(root);
    return root;
  }

  function empty(figureId, message) {
    const plot = $(figureId).querySelector('.plot');
    const p = document.createElement('p');
    p.className = 'empty';
    p.textContent = message;
    plot.replaceChildren(p);
  }

  function legend(figureId, entries) {
    const list = $(figureId).querySelector('.legend');
    if (!list) return;
    list.replaceChildren();
    for (const [label, color] of entries) {
      const item = document.createElement('li');
      const swatch = svg('svg', { viewBox: '0 0 10 10' });
      swatch.appendChild(svg('rect', { width: 10, height: 10, fill: color }));
      const name = document.createElement('span');
      name.textContent = label;
      item.append(swatch, name);
      list.appendChild(item);
    }
  }

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const magnitude = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * magnitude) return step * magnitude;
    }
    return 10 * magnitude;
  }

  // Y axis with 4 grid lines; returns the value → y mapping.
  function yAxis(root, max, format) {
    const top = niceMax(max);
    const innerH = H - PAD.top - PAD.bottom;
    const y = (v) => PAD.top + innerH - (v / top) * innerH;
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      root.appendChild(svg('line', { class: 'grid-line', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
      root.appendChild(svg('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v)));
    }
    root.appendChild(svg('line', { class: 'axis', x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }));
    return y;
  }

  // Category slots along x, with at most ~12 labels.
  function xSlots(root, labels) {
    const innerW = W - PAD.left - PAD.right;
    const slot = innerW / Math.max(labels.length, 1);
    const every = Math.ceil(labels.length / 12);
    labels.forEach((label, i) => {
      if (i % every === 0) {
        root.appendChild(svg('text', { x: PAD.left + slot * (i + 0.5), y: H - PAD.bottom + 16, 'text-anchor': 'middle' }, label));
      }
    });
    root.appendChild(svg('line', { class: 'axis', x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }));
    return { slot, x: (i) => PAD.left + slot * i };
  }

  // ------------------------------------------------------------------------------------------
  // Charts
  // ------------------------------------------------------------------------------------------

  function modelColors(report) {
    const colors = new Map();
    report.models.forEach((m, i) => colors.set(m.model, PALETTE[i % PALETTE.length]));
    return colors;
  }

  function drawCost(report) {
    const root = canvas('chart-cost');
    const values = report.buckets.map((b) => Number(b.cost_usd));
    const y = yAxis(root, Math.max(...values, 0), (v) => '$' + (v < 0.01 && v > 0 ? v.toPrecision(2) : v.toFixed(2)));
    const { slot, x } = xSlots(root, report.buckets.map((b) => shortDay(b.start)));
    report.buckets.forEach((b, i) => {
      const v = Number(b.cost_usd);
      const bar = svg('rect', {
        class: 'bar',
        x: x(i) + slot * 0.15,
        y: y(v),
        width: slot * 0.7,
        height: Math.max(y(0) - y(v), v > 0 ? 1 : 0),
        fill: '#2f6fde',
        'data-cost': b.cost_usd,
      });
      root.appendChild(withTitle(bar, `${day(b.start)}: $${b.cost_usd} (${integer.format(b.requests)} requests)`));
    });
  }

  function drawTokens(report, colors) {
    const root = canvas('chart-tokens');
    const totals = report.buckets.map((b) => b.total_tokens);
    const y = yAxis(root, Math.max(...totals, 0), (v) => compact.format(v));
    const { slot, x } = xSlots(root, report.buckets.map((b) => shortDay(b.start)));
    report.buckets.forEach((b, i) => {
      let base = 0;
      for (const m of b.models || []) {
        if (m.total_tokens === 0) continue;
        const bar = svg('rect', {
          class: 'bar',
          x: x(i) + slot * 0.15,
          y: y(base + m.total_tokens),
          width: slot * 0.7,
          height: Math.max(y(base) - y(base + m.total_tokens), 1),
          fill: colors.get(m.model) || PALETTE[0],
        });
        root.appendChild(withTitle(bar, `${day(b.start)} ${m.model}: ${integer.format(m.total_tokens)} tokens ` +
          `(${integer.format(m.prompt_tokens)} prompt, ${integer.format(m.completion_tokens)} completion, ` +
          `${integer.format(m.cached_tokens)} cached)`));
        base += m.total_tokens;
      }
    });
    legend('chart-tokens', report.models.map((m) => [m.model, colors.get(m.model)]));
  }

  function drawLatency(report) {
    const models = report.models.filter((m) => m.latency_ms);
    if (models.length === 0) {
      empty('chart-latency', 'No requests in this range.');
      legend('chart-latency', []);
      return;
    }
    const root = canvas('chart-latency');
    const max = Math.max(...models.map((m) => m.latency_ms.p99));
    const y = yAxis(root, max, (v) => compact.format(v));
    const { slot, x } = xSlots(root, models.map((m) => m.model));
    const keys = ['p50', 'p95', 'p99'];
    const width = (slot * 0.75) / keys.length;
    models.forEach((m, i) => {
      keys.forEach((k, j) => {
        const v = m.latency_ms[k];
        const bar = svg('rect', {
          class: 'bar',
          x: x(i) + slot * 0.125 + width * j,
          y: y(v),
          width: width * 0.9,
          height: Math.max(y(0) - y(v), 1),
          fill: PERCENTILE_COLORS[k],
        });
        root.appendChild(withTitle(bar, `${m.model} ${k}: ${v} ms`));
      });
    });
    legend('chart-latency', keys.map((k) => [k, PERCENTILE_COLORS[k]]));
    $('latency-note').textContent =
      `From mergeable histograms: each value is within ±${Math.round(report.latency_error_bound * 100)} % of the exact percentile.`;
  }

  function drawErrors(report) {
    const entries = Object.entries(report.totals.errors_by_type).sort((a, b) => b[1] - a[1]);
    if (entries.length === 0) {
      empty('chart-errors', 'No errors in this range.');
      return;
    }
    const root = canvas('chart-errors');
    const max = niceMax(Math.max(...entries.map((e) => e[1])));
    const left = 150;
    const rowH = Math.min(32, (H - PAD.top - PAD.bottom) / entries.length);
    entries.forEach(([kind, count], i) => {
      const top = PAD.top + i * rowH;
      const width = ((W - left - 60) * count) / max;
      root.appendChild(svg('text', { x: left - 8, y: top + rowH / 2 + 4, 'text-anchor': 'end' }, kind));
      const bar = svg('rect', {
        class: 'bar',
        x: left,
        y: top + rowH * 0.15,
        width: Math.max(width, 1),
        height: rowH * 0.7,
        fill: '#c23b3b',
        'data-kind': kind,
        'data-count': count,
      });
      root.appendChild(withTitle(bar, `${kind}: ${integer.format(count)}`));
      root.appendChild(svg('text', { x: left + width + 6, y: top + rowH / 2 + 4 }, integer.format(count)));
    });
  }

  function drawCache(report) {
    const root = canvas('chart-cache');
    const y = yAxis(root, 1, (v) => Math.round(v * 100) + ' %');
    const { slot, x } = xSlots(root, report.buckets.map((b) => shortDay(b.start)));
    const series = [
      ['Response cache hits', 'cache_hit_rate', '#2a9d6f'],
      ['Prompt tokens from the provider cache', 'cached_token_share', '#e07b24'],
    ];
    for (const [label, field, color] of series) {
      const points = report.buckets
        .map((b, i) => [b, i])
        .filter(([b]) => b.requests > 0)
        .map(([b, i]) => [x(i) + slot / 2, y(b[field]), b]);
      if (points.length > 1) {
        root.appendChild(svg('polyline', { class: 'line', stroke: color, points: points.map((p) => p[0] + ',' + p[1]).join(' ') }));
      }
      for (const [px, py, b] of points) {
        const dot = svg('circle', {
          class: 'point',
          cx: px,
          cy: py,
          r: 3.5,
          fill: color,
          'data-series': field,
          'data-start': b.start,
          'data-rate': b[field],
        });
        root.appendChild(withTitle(dot, `${day(b.start)} ${label}: ${percent(b[field])}`));
      }
    }
    legend('chart-cache', series.map(([label, , color]) => [label, color]));
  }

  // ------------------------------------------------------------------------------------------
  // Cards and table
  // ------------------------------------------------------------------------------------------

  function drawTotals(report) {
    const t = report.totals;
    const cost = $('total-cost');
    cost.textContent = '$' + t.cost_usd;
    cost.dataset.value = t.cost_usd;
    $('total-requests').textContent = integer.format(t.requests);
    $('total-tokens').textContent = integer.format(t.total_tokens);
    $('error-rate').textContent = percent(t.error_rate);
    $('cache-rate').textContent = percent(t.cache_hit_rate);
    $('latency-p95').textContent = t.latency_ms ? t.latency_ms.p95 + ' ms' : '–';
    $('tenant').textContent = 'Tenant: ' + report.tenant_id;
    $('range-label').textContent = `${day(report.from)} to ${day(report.to)} (UTC, end exclusive), by ${report.granularity}`;
  }

  function cell(row, text, className) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined ? '' : String(text);
    if (className) td.className = className;
    row.appendChild(td);
  }

  // The end user whose requests the table lists; null: everyone's.
  let pickedUser = null;

  function eventParams(extra) {
    const params = Object.assign({ limit: 25 }, extra);
    if (pickedUser) params.user = pickedUser;
    return params;
  }

  function drawUsers(list) {
    const body = $('users-table').querySelector('tbody');
    body.replaceChildren();
    for (const u of list.data) {
      const row = document.createElement('tr');
      const td = document.createElement('td');
      const pick = document.createElement('button');
      pick.type = 'button';
      pick.className = 'link';
      pick.textContent = u.user;
      pick.addEventListener('click', () => pickUser(u.user));
      td.appendChild(pick);
      row.appendChild(td);
      cell(row, integer.format(u.requests), 'num');
      cell(row, integer.format(u.prompt_tokens), 'num');
      cell(row, integer.format(u.completion_tokens), 'num');
      cell(row, u.cost_usd, 'num');
      body.appendChild(row);
    }
    if (body.children.length === 0) {
      const row = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 5;
      td.textContent = 'No requests named an end user in this range.';
      row.appendChild(td);
      body.appendChild(row);
    }
  }

  async function pickUser(user) {
    pickedUser = user;
    $('events-user').textContent = user ? `of ${user}` : '';
    $('all-users').hidden = !user;
    try {
      const events = await api('v1/usage/events', eventParams({}));
      $('events-table').querySelector('tbody').replaceChildren();
      appendEvents(events);
    } catch (err) {
      setStatus(err.message || String(err), true);
    }
  }

  function appendEvents(list) {
    const body = $('events-table').querySelector('tbody');
    for (const e of list.data) {
      const row = document.createElement('tr');
      row.dataset.requestId = e.request_id;
      cell(row, String(e.created_at).replace('T', ' ').slice(0, 19));
      cell(row, e.request_id, 'mono');
      cell(row, e.model === e.model_served ? e.model : `${e.model} → ${e.model_served}`);
      cell(row, e.status === 'ok' ? 'ok' : 'error: ' + (e.error_type || 'unknown'), e.status === 'ok' ? '' : 'error');
      cell(row, integer.format(e.prompt_tokens), 'num');
      cell(row, integer.format(e.completion_tokens), 'num');
      cell(row, integer.format(e.cached_tokens), 'num');
      cell(row, e.cost_usd, 'num');
      cell(row, integer.format(e.latency_ms), 'num');
      cell(row, e.cache_hit ? 'hit' : '');
      body.appendChild(row);
    }
    if (body.children.length === 0) {
      const row = document.createElement('tr');
      const td = document.createElement('td');
      td.colSpan = 10;
      td.textContent = 'No requests yet.';
      row.appendChild(td);
      body.appendChild(row);
    }
    nextCursor = list.next_cursor;
    $('more').hidden = !list.has_more;
  }

  // ------------------------------------------------------------------------------------------
  // Flow
  // ------------------------------------------------------------------------------------------

  function setStatus(text, isError) {
    const status = $('status');
    status.textContent = text;
    status.classList.toggle('error', Boolean(isError));
  }

  async function load() {
    document.body.dataset.state = 'loading';
    setStatus('Loading…');
    const days = Number($('range').value) || 30;
    const today = new Date();
    const from = new Date(today.getTime() - (days - 1) * 86400000);
    try {
      const [report, events, users] = await Promise.all([
        api('v1/usage', { from: isoDate(from), to: isoDate(today), granularity: 'day', group_by: 'model' }),
        api('v1/usage/events', eventParams({})),
        api('v1/usage', { from: isoDate(from), to: isoDate(today), group_by: 'user', limit: 20 }),
      ]);
      drawUsers(users);
      const colors = modelColors(report);
      drawTotals(report);
      drawCost(report);
      drawTokens(report, colors);
      drawLatency(report);
      drawErrors(report);
      drawCache(report);
      $('events-table').querySelector('tbody').replaceChildren();
      appendEvents(events);
      $('dashboard').hidden = false;
      $('forget').hidden = false;
      setStatus('Updated ' + new Date().toISOString().replace('T', ' ').slice(0, 19) + ' UTC');
      document.body.dataset.state = 'ready';
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) {
        forget();
      }
      setStatus(err.message || String(err), true);
      document.body.dataset.state = 'error';
    }
  }

  async function more() {
    if (!nextCursor) return;
    try {
      appendEvents(await api('v1/usage/events', eventParams({ cursor: nextCursor })));
    } catch (err) {
      setStatus(err.message || String(err), true);
    }
  }

  function forget() {
    apiKey = null;
    try {
      sessionStorage.removeItem(STORAGE_KEY);
    } catch (_) { /* storage disabled */ }
    $('dashboard').hidden = true;
    $('forget').hidden = true;
    document.body.dataset.state = 'signed-out';
    setStatus('');
  }

  function start() {
    const form = $('key-form');
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      const typed = $('api-key').value.trim();
      if (typed) {
        apiKey = typed;
        $('api-key').value = '';
        try {
          if ($('remember').checked) {
            sessionStorage.setItem(STORAGE_KEY, typed);
          } else {
            sessionStorage.removeItem(STORAGE_KEY);
          }
        } catch (_) { /* storage disabled: memory only */ }
      }
      if (!apiKey) {
        setStatus('Enter your Tollgate API key.', true);
        return;
      }
      load();
    });
    $('forget').addEventListener('click', forget);
    $('more').addEventListener('click', more);
    $('all-users').addEventListener('click', () => pickUser(null));
    $('range').addEventListener('change', () => { if (apiKey) load(); });
    try {
      const kept = sessionStorage.getItem(STORAGE_KEY);
      if (kept) {
        apiKey = kept;
        $('remember').checked = true;
        load();
      }
    } catch (_) { /* storage disabled */ }
  }

  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
