// Live delivery over Server-Sent Events, managed by the client: a browser's
// EventSource retries with the URL it was opened with, whose ?auth= goes stale
// and whose since= is behind, so on any error this closes it and opens a new
// one, freshly signed and resuming after the last seq this client kept, after
// a jittered, growing delay. Messages are handled one at a time, in order;
// the store ignores any seq it already has, so an overlap between two
// connections shows nothing twice.
import { streamURL, poll, words, ApiError } from './api.js';

const MIN_DELAY = 500;
const MAX_DELAY = 30000;
// A tab hidden for longer than this reconnects when it is shown again: its
// connection may have died silently while the machine slept.
const WAKE_AFTER = 30000;

export class Live {
  // id: the identity; cursor(): the last seq kept; handle(m): keeps one
  // stored message (rejects when it could not, e.g. the server is away);
  // onStatus(status, words): status is "connecting", "live" or
  // "reconnecting".
  constructor({ id, cursor, handle, onStatus }) {
    Object.assign(this, { id, cursor, handle, onStatus });
    this.es = null;
    this.attempt = 0;
    this.timer = 0;
    this.chain = Promise.resolve();
    this.gen = 0;
    this.status = '';
    this.hiddenAt = 0;
    this.onOnline = () => this.reconnectNow();
    // A connection may hang for minutes after the network went away; the
    // browser knows sooner, so say so and stop trusting the stream.
    this.onOffline = () => this.fail(this.gen, null);
    this.onVisible = () => {
      if (document.visibilityState === 'hidden') {
        this.hiddenAt = Date.now();
      } else if (this.status !== 'live' || (this.hiddenAt && Date.now() - this.hiddenAt > WAKE_AFTER)) {
        this.reconnectNow();
      }
    };
  }

  start() {
    addEventListener('online', this.onOnline);
    addEventListener('offline', this.onOffline);
    document.addEventListener('visibilitychange', this.onVisible);
    this.setStatus('connecting', '');
    this.connect();
  }

  stop() {
    removeEventListener('online', this.onOnline);
    removeEventListener('offline', this.onOffline);
    document.removeEventListener('visibilitychange', this.onVisible);
    clearTimeout(this.timer);
    this.close();
  }

  setStatus(s, detail) {
    this.status = s;
    this.onStatus(s, detail);
  }

  close() {
    this.gen++;
    if (this.es) {
      this.es.close();
      this.es = null;
    }
  }

  reconnectNow() {
    clearTimeout(this.timer);
    this.close();
    this.attempt = 0;
    this.connect();
  }

  async connect() {
    this.close();
    const gen = this.gen;
    // Wait for the messages already received to be kept, so the cursor
    // this connection resumes from is the newest.
    await this.chain.catch(() => {});
    if (gen !== this.gen) return;
    this.chain = Promise.resolve();
    const url = await streamURL(this.id, this.cursor());
    if (gen !== this.gen) return;
    const es = new EventSource(url);
    this.es = es;
    let opened = false;
    es.onopen = () => {
      opened = true;
    };
    es.addEventListener('message', (ev) => {
      if (gen !== this.gen) return;
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return; // not a stored message; the seq is unknown, so nothing to keep
      }
      this.chain = this.chain.then(() => {
        if (gen === this.gen) return this.handle(m);
      });
      this.chain.catch((err) => {
        if (gen === this.gen) this.fail(gen, err);
      });
    });
    es.addEventListener('ready', () => {
      if (gen !== this.gen) return;
      this.chain.then(() => {
        if (gen !== this.gen) return;
        this.attempt = 0;
        this.setStatus('live', '');
      }, () => {});
    });
    es.onerror = () => {
      if (gen !== this.gen) return;
      this.fail(gen, opened ? null : 'probe');
    };
  }

  // fail ends connection gen and schedules the next one. Why it failed is
  // shown in words: EventSource does not tell, so a stream that never opened
  // is asked about with a signed poll.
  async fail(gen, why) {
    if (gen !== this.gen) return;
    this.close();
    const delay = Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 10);
    let detail = navigator.onLine === false ? 'This device is offline.' : '';
    let wait = delay / 2 + (Math.random() * delay) / 2;
    if (why === 'probe') {
      try {
        await poll(this.id, this.cursor());
      } catch (err) {
        detail = words(err);
        if (err instanceof ApiError && err.retryAfter) wait = Math.max(wait, err.retryAfter * 1000);
      }
    } else if (why) {
      detail = words(why);
    }
    if (this.gen !== gen + 1) return; // someone reconnected meanwhile
    this.setStatus('reconnecting', detail);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
  }
}
