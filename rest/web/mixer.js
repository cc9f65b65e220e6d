// The stems of one song as a mixer. Every stem is fetched and decoded into an AudioBuffer; one
// transport starts an AudioBufferSourceNode per stem at the same AudioContext time, so the stems
// stay sample-aligned however long they play. Each stem runs through its own GainNode (volume,
// mute, solo) and draws its waveform from the decoded samples.

import * as api from './api.js';
import { h } from './dom.js';

/** The sources start this far ahead of "now", s, so all of them are scheduled before it comes. */
const START_AHEAD = 0.05;
/** Time constant of gain changes, s: short enough to feel instant, long enough not to click. */
const RAMP = 0.015;
/** Columns of min/max peaks kept per stem; waveforms are drawn from these at any width. */
const PEAK_COLUMNS = 4096;

function clock(seconds) {
  const m = Math.floor(seconds / 60);
  return `${m}:${(seconds - m * 60).toFixed(1).padStart(4, '0')}`;
}

/** Per column, the lowest and highest sample over all channels: [min0, max0, min1, max1, ...]. */
function peaks(buffer) {
  const out = new Float32Array(PEAK_COLUMNS * 2);
  const n = buffer.length;
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let col = 0; col < PEAK_COLUMNS; col++) {
      const end = Math.floor(((col + 1) * n) / PEAK_COLUMNS);
      let lo = out[2 * col];
      let hi = out[2 * col + 1];
      for (let i = Math.floor((col * n) / PEAK_COLUMNS); i < end; i++) {
        const v = data[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      out[2 * col] = lo;
      out[2 * col + 1] = hi;
    }
  }
  return out;
}

function toggleButton(text, className, label) {
  return h('button', {
    type: 'button',
    className: `toggle ${className}`,
    textContent: text,
    attrs: { 'aria-label': label, 'aria-pressed': 'false' },
  });
}

/** The file name a download is saved under: the song's name without extension, then the stem. */
function downloadName(job, track, ext = 'mp3') {
  const base = job.name.replace(/\.[^.]*$/, '') || job.hash.slice(0, 12);
  return `${base}-${track}.${ext}`;
}

function downloadLink(job, track, label, ext = 'mp3', text = 'Download') {
  return h('a', {
    className: 'download',
    href: api.trackUrl(job.hash, track, ext),
    download: downloadName(job, track, ext),
    textContent: text,
    attrs: { 'aria-label': label, 'data-file': `${track}.${ext}` },
  });
}

function zipLink(job, format) {
  return h('a', {
    className: 'download',
    href: api.zipUrl(job.hash, format),
    download: downloadName(job, 'stems', 'zip'),
    textContent: `ZIP of ${format.toUpperCase()}`,
    attrs: { 'aria-label': `Download every stem as ${format.toUpperCase()} in one zip`, 'data-file': `zip-${format}` },
  });
}

export class Mixer {
  /**
   * @param {{section, song, play, stop, seek, clock, stems, downloads, message}} el the mixer's
   *   elements in index.html
   */
  constructor(el) {
    this.el = el;
    this.ctx = null;
    this.stems = [];
    this.duration = 0;
    /** Where playback starts or resumes, s into the song. */
    this.offset = 0;
    /** The context time at which the song's first sample plays, while the sources run. */
    this.startedAt = 0;
    this.running = false;
    /** Bumped by every open(), so a slow load of an earlier song is dropped when it ends. */
    this.generation = 0;
    this.frame = this.frame.bind(this);
    el.play.addEventListener('click', () => this.toggle());
    el.stop.addEventListener('click', () => this.stop());
    el.seek.addEventListener('input', () => this.seek((el.seek.value / 1000) * this.duration));
    new ResizeObserver(() => this.drawAll()).observe(el.stems);
    document.addEventListener('keydown', (e) => {
      const inControl = e.target.closest('button, input, select, textarea, a');
      if (e.code === 'Space' && !inControl && this.stems.length) {
        e.preventDefault();
        this.toggle();
      }
    });
  }

  context() {
    // The stems are 44.1 kHz; decoding at that rate spares a resampling of every stem.
    if (!this.ctx) this.ctx = new AudioContext({ sampleRate: 44100 });
    return this.ctx;
  }

  message(text, isError = false) {
    this.el.message.textContent = text;
    this.el.message.classList.toggle('error', isError);
  }

  /** Loads `job`'s stems ({hash, name, model, tracks}) and shows them, replacing any others. */
  async open(job) {
    const generation = ++this.generation;
    this.close();
    const { el } = this;
    el.section.hidden = false;
    el.section.dataset.state = 'loading';
    el.song.textContent = `${job.name} · ${job.model} · ${job.tracks.length} stems`;
    this.message(`Loading ${job.tracks.length} stems…`);
    el.section.scrollIntoView({ block: 'start' });
    const ctx = this.context();
    let buffers;
    try {
      buffers = await Promise.all(
        job.tracks.map(async (t) => ctx.decodeAudioData(await api.trackBytes(job.hash, t))),
      );
    } catch (e) {
      if (generation === this.generation) {
        el.section.dataset.state = 'error';
        this.message(`The stems could not be loaded: ${e.message}`, true);
      }
      return;
    }
    if (generation !== this.generation) return;
    const stemPeaks = buffers.map(peaks);
    // One scale for every stem, so their loudness can be compared by eye.
    const loudest = Math.max(1e-6, ...stemPeaks.map((p) => p.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));
    this.stems = job.tracks.map((track, i) => this.stem(job, track, buffers[i], stemPeaks[i], loudest));
    this.duration = Math.max(...buffers.map((b) => b.duration));
    el.stems.replaceChildren(...this.stems.map((s) => s.row));
    el.downloads.replaceChildren(...this.extraDownloads(job));
    for (const c of [el.play, el.stop, el.seek]) c.disabled = false;
    this.apply();
    this.drawAll();
    this.message('');
    this.update();
  }

  /**
   * Downloads beyond the stems: the song without each stem (`no_vocals`, the instrumental) as
   * MP3 or FLAC, and every stem in one zip; the API makes each on its first download.
   */
  extraDownloads(job) {
    const mixes = (job.mixes || []).map((mix) =>
      h(
        'p',
        {},
        `${mix.replace(/^no_/, 'without ')} `,
        downloadLink(job, mix, `Download the mix ${mix} (MP3)`, 'mp3', 'MP3'),
        ' ',
        downloadLink(job, mix, `Download the mix ${mix} (FLAC)`, 'flac', 'FLAC'),
      ),
    );
    const all = h('p', {}, 'every stem ', zipLink(job, 'mp3'), ' ', zipLink(job, 'flac'));
    return [...mixes, all];
  }

  /** Builds one stem's row and audio path. */
  stem(job, track, buffer, stemPeaks, loudest) {
    const gain = this.ctx.createGain();
    gain.connect(this.ctx.destination);

    const mute = toggleButton('Mute', 'mute', `Mute ${track}`);
    const solo = toggleButton('Solo', 'solo', `Solo ${track}`);
    const canvas = h('canvas', {
      attrs: { role: 'img', 'aria-label': `Waveform of ${track}; click to play from there` },
    });
    const head = h('div', { className: 'playhead' });
    const wave = h('div', { className: 'wave' }, canvas, head);
    const slider = h('input', {
      type: 'range',
      min: '0',
      max: '1.5',
      step: '0.05',
      value: '1',
      attrs: { 'aria-label': `Volume of ${track}` },
    });
    const row = h(
      'li',
      { className: 'stem', attrs: { 'data-stem': track } },
      h('span', { className: 'stem-name', textContent: track }),
      h('span', { className: 'stem-buttons' }, mute, solo),
      wave,
      h('label', { className: 'volume' }, h('span', { textContent: 'Volume' }), slider),
      downloadLink(job, track, `Download ${track} (MP3)`),
    );

    const stem = {
      track,
      buffer,
      peaks: stemPeaks,
      loudest,
      gain,
      row,
      canvas,
      head,
      muted: false,
      solo: false,
      volume: 1,
      source: null,
    };
    for (const [button, key] of [[mute, 'muted'], [solo, 'solo']]) {
      button.addEventListener('click', () => {
        stem[key] = !stem[key];
        button.setAttribute('aria-pressed', String(stem[key]));
        this.apply();
      });
    }
    slider.addEventListener('input', () => {
      stem.volume = Number(slider.value);
      this.apply();
    });
    wave.addEventListener('pointerdown', (e) => {
      const r = wave.getBoundingClientRect();
      this.seek(((e.clientX - r.left) / r.width) * this.duration);
    });
    return stem;
  }

  /** Sets every stem's gain: solo picks the stems heard, mute silences one even when soloed. */
  apply() {
    const anySolo = this.stems.some((s) => s.solo);
    for (const s of this.stems) {
      const audible = !s.muted && (!anySolo || s.solo);
      s.row.dataset.audible = String(audible);
      s.gain.gain.setTargetAtTime(audible ? s.volume : 0, this.ctx.currentTime, RAMP);
    }
  }

  drawAll() {
    for (const s of this.stems) this.draw(s);
  }

  draw(stem) {
    const { canvas, peaks: p, loudest } = stem;
    const ratio = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const h = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    const g = canvas.getContext('2d');
    g.clearRect(0, 0, w, h);
    g.fillStyle = getComputedStyle(stem.row).getPropertyValue('--stem').trim() || 'gray';
    const mid = h / 2;
    for (let x = 0; x < w; x++) {
      const from = Math.floor((x * PEAK_COLUMNS) / w);
      const to = Math.max(from + 1, Math.floor(((x + 1) * PEAK_COLUMNS) / w));
      let lo = 0;
      let hi = 0;
      for (let c = from; c < to; c++) {
        lo = Math.min(lo, p[2 * c]);
        hi = Math.max(hi, p[2 * c + 1]);
      }
      const top = mid - (hi / loudest) * mid;
      const bottom = mid - (lo / loudest) * mid;
      // At least one device pixel, so silence still shows as a line.
      g.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
  }

  /** The play position, s into the song. */
  position() {
    if (!this.running) return this.offset;
    return Math.min(this.duration, Math.max(0, this.ctx.currentTime - this.startedAt));
  }

  startSources() {
    const ctx = this.ctx;
    const when = ctx.currentTime + START_AHEAD;
    for (const s of this.stems) {
      const src = ctx.createBufferSource();
      src.buffer = s.buffer;
      src.connect(s.gain);
      src.start(when, this.offset);
      s.source = src;
    }
    this.startedAt = when - this.offset;
    this.running = true;
    requestAnimationFrame(this.frame);
  }

  stopSources() {
    for (const s of this.stems) {
      if (s.source) {
        s.source.stop();
        s.source.disconnect();
        s.source = null;
      }
    }
    this.running = false;
  }

  toggle() {
    if (this.wantPlay) this.pause();
    else this.play();
  }

  async play() {
    if (!this.stems.length || this.wantPlay) return;
    this.wantPlay = true;
    this.update();
    // A context created before any click starts suspended (autoplay rules); this click resumes it.
    await this.ctx.resume();
    if (!this.wantPlay || this.running) return;
    if (this.offset >= this.duration) this.offset = 0;
    this.startSources();
  }

  pause() {
    this.offset = this.position();
    this.wantPlay = false;
    this.stopSources();
    this.update();
  }

  stop() {
    this.pause();
    this.offset = 0;
    this.update();
  }

  /** Moves the play position to `seconds`, playing on from there if the mixer was playing. */
  seek(seconds) {
    this.offset = Math.min(this.duration, Math.max(0, seconds));
    if (this.running) {
      this.stopSources();
      this.startSources();
    }
    this.update();
  }

  frame() {
    if (!this.running) return;
    if (this.position() >= this.duration) {
      this.stop();
      return;
    }
    this.update();
    requestAnimationFrame(this.frame);
  }

  update() {
    const { el } = this;
    const t = this.position();
    const fraction = this.duration ? t / this.duration : 0;
    el.clock.value = `${clock(t)} / ${clock(this.duration)}`;
    el.seek.value = String(Math.round(fraction * 1000));
    el.seek.setAttribute('aria-valuetext', clock(t));
    for (const s of this.stems) s.head.style.left = `${fraction * 100}%`;
    el.play.textContent = this.wantPlay ? 'Pause' : 'Play';
    el.play.setAttribute('aria-pressed', String(Boolean(this.wantPlay)));
    if (this.stems.length) el.section.dataset.state = this.wantPlay ? 'playing' : 'ready';
  }

  /** Stops playback and drops the current song's stems. */
  close() {
    this.wantPlay = false;
    this.stopSources();
    for (const s of this.stems) s.gain.disconnect();
    this.stems = [];
    this.duration = 0;
    this.offset = 0;
    for (const c of [this.el.play, this.el.stop, this.el.seek]) c.disabled = true;
    this.el.stems.replaceChildren();
    this.el.downloads.replaceChildren();
    this.update();
  }
}
