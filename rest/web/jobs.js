// The songs this browser has sent: kept in localStorage so they are listed again after a reload,
// each with its live state from GET /apiv1/status (polled while it is queued or running) and, while
// it waits, its place in GET /apiv1/queue.

import * as api from './api.js';
import { h } from './dom.js';

const STORED = 'stemsep.jobs.v1';
/** How many songs are remembered; the oldest is forgotten first. */
const KEEP = 20;
/** Between two looks at the server while a song waits or runs, ms. */
const POLL_MS = 1000;

function isFinal(state) {
  return state === 'done' || state === 'failed' || state === 'unknown';
}

function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] || 'th';
  return `${n}${suffix}`;
}

/** A song as listed before the server has said anything about it. */
function fresh(hash, name, model) {
  return { hash, name, model, state: '', progress: 0, tracks: [], mixes: [], error: null, position: 0 };
}

/** The words for a job's state. */
function describe(job) {
  switch (job.state) {
    case 'queued':
      if (job.position) {
        const ahead = job.position - 1;
        const songs = ahead === 1 ? 'song' : 'songs';
        return `Queued: ${ordinal(job.position)} in line (${ahead} ${songs} ahead)`;
      }
      return 'Queued: waiting for a worker';
    case 'running':
      return `Separating: ${job.progress}%`;
    case 'done':
      return `Done: ${job.tracks.length} stems`;
    case 'failed':
      return `Failed: ${job.error || 'no reason recorded'}`;
    case 'unknown':
      return `Unknown to the server: ${job.error}`;
    default:
      return 'Waiting for the server…';
  }
}

/** The list of songs, rendered into `root`; `onOpen(job)` opens a finished song in the mixer. */
export class JobList {
  constructor(root, empty, { onOpen, onDone }) {
    this.root = root;
    this.empty = empty;
    this.onOpen = onOpen;
    this.onDone = onDone;
    this.jobs = this.load();
    this.timer = null;
    this.inFlight = null;
    this.pollAgain = false;
    this.render();
    this.poll();
  }

  load() {
    try {
      const stored = JSON.parse(localStorage.getItem(STORED));
      if (!Array.isArray(stored)) return [];
      return stored
        .filter((j) => j && /^[0-9a-f]{56}$/.test(j.hash))
        .map((j) => fresh(j.hash, String(j.name || j.hash), String(j.model || '')));
    } catch {
      return [];
    }
  }

  save() {
    const kept = this.jobs.map(({ hash, name, model }) => ({ hash, name, model }));
    try {
      localStorage.setItem(STORED, JSON.stringify(kept));
    } catch {
      // Storage full or disabled: the list lasts as long as the page.
    }
  }

  /** Adds (or moves to the top) a song just submitted; `openWhenDone` opens it in the mixer. */
  add(hash, name, model, openWhenDone) {
    const existing = this.jobs.find((j) => j.hash === hash);
    const job = existing || fresh(hash, name, model);
    job.name = name;
    job.openWhenDone = openWhenDone;
    if (isFinal(job.state)) job.state = '';
    this.jobs = [job, ...this.jobs.filter((j) => j !== job)].slice(0, KEEP);
    this.save();
    this.render();
    this.poll();
  }

  forget(hash) {
    this.jobs = this.jobs.filter((j) => j.hash !== hash);
    this.save();
    this.render();
  }

  /** Asks the server about every song not yet final; again in POLL_MS while any is. */
  poll() {
    if (this.inFlight) {
      this.pollAgain = true;
      return;
    }
    clearTimeout(this.timer);
    this.inFlight = this.refresh().finally(() => {
      this.inFlight = null;
      const again = this.pollAgain;
      this.pollAgain = false;
      if (again) this.poll();
      else if (this.jobs.some((j) => !isFinal(j.state))) this.timer = setTimeout(() => this.poll(), POLL_MS);
    });
  }

  async refresh() {
    const active = this.jobs.filter((j) => !isFinal(j.state));
    if (!active.length) return;
    const statuses = await Promise.all(active.map((j) => api.status(j.hash).catch((e) => e)));
    let waiting = null;
    if (statuses.some((s) => s.state === 'queued')) waiting = await api.queue().catch(() => null);
    active.forEach((job, i) => {
      const s = statuses[i];
      if (s instanceof api.ApiError) {
        if (s.status === 404) Object.assign(job, { state: 'unknown', error: s.message });
        // Anything else (503 while Redis restarts, a dropped connection): try again next time.
        else job.notice = s.message;
        return;
      }
      Object.assign(job, {
        state: s.state,
        progress: s.progress,
        tracks: Array.isArray(s.tracks) ? s.tracks : [],
        mixes: mixesOf(Array.isArray(s.tracks) ? s.tracks : []),
        error: s.error,
        model: s.model || job.model,
        notice: null,
      });
      // The queue lists the newest first; the worker takes from the end.
      const at = waiting ? waiting.indexOf(job.hash) : -1;
      job.position = at >= 0 ? waiting.length - at : 0;
      if (job.state === 'done') this.onDone(job);
    });
    this.render();
  }

  render() {
    this.empty.hidden = this.jobs.length > 0;
    const items = this.jobs.map((job) => this.item(job));
    // Keep focus on a button that is re-rendered (keyboard users would lose their place).
    const focused = document.activeElement && document.activeElement.dataset.action
      ? [document.activeElement.dataset.action, document.activeElement.closest('li')?.dataset.hash]
      : null;
    this.root.replaceChildren(...items);
    if (focused) {
      const again = this.root.querySelector(`li[data-hash="${focused[1]}"] [data-action="${focused[0]}"]`);
      if (again) again.focus();
    }
  }

  item(job) {
    const progress = h('progress', {
      max: 100,
      value: job.state === 'done' ? 100 : job.progress,
      attrs: { 'aria-label': `Progress of ${job.name}` },
    });
    const actions = h('div', { className: 'job-actions' });
    const button = (action, text, label, onClick, className = '') => {
      const b = h('button', {
        type: 'button',
        className,
        textContent: text,
        attrs: { 'data-action': action, 'aria-label': label },
      });
      b.addEventListener('click', onClick);
      actions.append(b);
    };
    if (job.state === 'done' && job.tracks.length) {
      button('open', 'Open in mixer', `Open ${job.name} in the mixer`, () => this.onOpen(job), 'primary');
    }
    button('forget', 'Forget', `Forget ${job.name} (the server keeps its stems)`, () => this.forget(job.hash));
    return h(
      'li',
      { className: 'job', attrs: { 'data-hash': job.hash, 'data-state': job.state || 'pending' } },
      h(
        'div',
        { className: 'job-title' },
        h('strong', { textContent: job.name }),
        h(
          'span',
          { className: 'job-meta' },
          job.model ? `${job.model} · ` : '',
          h('code', { textContent: job.hash.slice(0, 12), title: job.hash }),
        ),
      ),
      progress,
      h('p', {
        className: 'job-status',
        textContent: describe(job) + (job.notice ? ` (${job.notice}; retrying)` : ''),
      }),
      actions,
    );
  }
}

/** The song without each of its stems (`no_vocals`: the instrumental), which the API makes on
 * first download; none that is already a track. */
function mixesOf(tracks) {
  return tracks
    .filter((t) => !t.startsWith('no_'))
    .map((t) => `no_${t}`)
    .filter((m) => !tracks.includes(m));
}
