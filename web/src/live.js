// Live delivery over Server-Sent Events, managed by the client. The stream is
// read with fetch and a stream reader, not EventSource: EventSource hides
// the server's `: ping` comments, so a connection that went silent (a hung
// server or proxy keeps it open and sends nothing) could not be told from an
// idle one; it cannot set headers, so its credential would be in the URL; and
// its own retry reuses a stale signature. On any failure, or after a silence
// longer than SILENCE ping intervals, this ends the connection and, after a
// jittered, growing delay, opens a new one, freshly signed and resuming
// (Last-Event-ID) after the last seq this client kept. Messages are handled
// one at a time, in order; the store ignores any seq it already has, so an
// overlap between two connections shows nothing twice.
import { openStream, words, ApiError } from './api.js';

const MIN_DELAY = 500;
const MAX_DELAY = 30000;
// A tab hidden for longer than this reconnects when it is shown again: its
// connection may have died silently while the machine slept.
const WAKE_AFTER = 30000;
// The ping interval when the server does not state one (Kez-Ping-Interval,
// milliseconds): PROTOCOL.md's default, at least every 15 s.
const DEFAULT_PING = 15000;
// A connection that brings nothing, no event and no ping, for this many
// ping intervals is taken for dead.
const SILENCE = 2.5;
// One event's text may be at most this long (a 64 KiB envelope, escaped,
// with room for the rest); a longer one ends the connection.
const MAX_EVENT = 512 * 1024;

// silenceAfter is how long a connection may be silent, from the server's
// stated ping interval (a header value, untrusted: bounded).
export function silenceAfter(header) {
  const ms = /^[0-9]{1,9}$/.test(header ?? '') ? Number(header) : DEFAULT_PING;
  return SILENCE * Math.min(Math.max(ms, 100), 600000);
}

// events reads text/event-stream from reader (the WHATWG HTML standard's
// "interpreting an event stream") and calls onEvent({event, data, id}) for
// each event with data. onBytes is called on every chunk, pings included.
// It resolves when the stream ends.
export async function events(reader, onBytes, onEvent) {
  const dec = new TextDecoder();
  let buf = '';
  let size = 0; // of the event's data so far
  let ev = { event: '', data: [], id: '' };
  const line = (l) => {
    if (l === '') {
      if (ev.data.length) onEvent({ event: ev.event, data: ev.data.join('\n'), id: ev.id });
      ev = { event: '', data: [], id: '' };
      size = 0;
      return;
    }
    if (l[0] === ':') return; // a comment: ": ping"
    const c = l.indexOf(':');
    const field = c < 0 ? l : l.slice(0, c);
    let value = c < 0 ? '' : l.slice(c + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'event') ev.event = value;
    else if (field === 'data') {
      size += value.length + 1;
      if (size > MAX_EVENT) throw new Error('The server sent an event too long to read.');
      ev.data.push(value);
    }
    else if (field === 'id' && !value.includes('\0')) ev.id = value;
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      if (buf.endsWith('\r')) line(buf.slice(0, -1)); // no "\n" is coming
      return;
    }
    onBytes();
    buf += dec.decode(value, { stream: true });
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      const ch = buf[i];
      if (ch !== '\n' && ch !== '\r') continue;
      if (ch === '\r' && i + 1 === buf.length) break; // "\n" may follow in the next chunk
      line(buf.slice(start, i));
      if (ch === '\r' && buf[i + 1] === '\n') i++;
      start = i + 1;
    }
    buf = buf.slice(start);
    if (buf.length > MAX_EVENT) throw new Error('The server sent an event too long to read.');
  }
}

export class Live {
  // id: the identity; cursor(): the last seq kept; handle(m): keeps one
  // stored message (rejects when it could not, e.g. the server is away);
  // onStatus(status, words): status is "connecting", "live" or
  // "reconnecting"; onGap(first, last): messages first to last were deleted
  // at the server before this client kept them (the stream's reset);
  // rewind(seq): the server stores nothing beyond seq, below the cursor (it
  // was restored from an older backup): resume from seq, or what it stores
  // next would be taken for what was kept already.
  constructor({ id, cursor, handle, onStatus, onGap, rewind }) {
    Object.assign(this, { id, cursor, handle, onStatus, onGap, rewind });
    this.abort = null;
    this.silence = 0;
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
    clearTimeout(this.silence);
    this.abort?.abort();
    this.abort = null;
  }

  reconnectNow() {
    clearTimeout(this.timer);
    this.close();
    this.attempt = 0;
    this.connect();
  }

  // then queues f after the messages received before it, for connection gen.
  then(gen, f) {
    this.chain = this.chain.then(() => {
      if (gen === this.gen) return f();
    });
    this.chain.catch((err) => {
      if (gen === this.gen) this.fail(gen, err);
    });
  }

  async connect() {
    this.close();
    const gen = this.gen;
    // Wait for the messages already received to be kept, so the cursor
    // this connection resumes from is the newest.
    await this.chain.catch(() => {});
    if (gen !== this.gen) return;
    this.chain = Promise.resolve();
    const abort = new AbortController();
    this.abort = abort;
    // The silence bound runs from before the request, so that a server
    // that hangs before answering is caught too, and restarts with every
    // chunk the connection brings.
    let bound = silenceAfter(null);
    let silent = false;
    const arm = () => {
      clearTimeout(this.silence);
      this.silence = setTimeout(() => {
        silent = true;
        abort.abort();
      }, bound);
    };
    arm();
    let why = null;
    try {
      const res = await openStream(this.id, this.cursor(), abort.signal);
      bound = silenceAfter(res.headers.get('Kez-Ping-Interval'));
      arm();
      await events(res.body.getReader(), arm, (ev) => this.event(gen, ev));
      // The server ended the stream (shutdown, a slow reader): resume.
    } catch (err) {
      if (silent) why = `The server sent nothing for ${Math.round(bound / 100) / 10} s.`;
      else if (abort.signal.aborted) return; // closed here: a reconnect, or stopped
      else if (err instanceof ApiError) why = err; // refused, or unreachable
      // else the connection broke while open: no reason to give
    }
    this.fail(gen, why);
  }

  event(gen, ev) {
    if (gen !== this.gen) return;
    if (ev.event === 'message' || ev.event === '') {
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return; // not a stored message; the seq is unknown, so nothing to keep
      }
      this.then(gen, () => this.handle(m));
    } else if (ev.event === 'ready') {
      // ready's id is the server's cursor (PROTOCOL.md): the seq of the
      // last message it sent, or where it resumed from; below ours only
      // when the server has nothing beyond it.
      const id = /^[0-9]{1,15}$/.test(ev.id) ? Number(ev.id) : null;
      this.then(gen, async () => {
        if (id !== null && id < this.cursor()) await this.rewind(id);
        this.attempt = 0;
        this.setStatus('live', '');
      });
    } else if (ev.event === 'reset') {
      let oldest;
      try {
        oldest = JSON.parse(ev.data).oldest;
      } catch {}
      if (!Number.isSafeInteger(oldest)) return;
      // The messages after the cursor and before oldest are gone; the
      // stream goes on with oldest. Said once the ones before it are kept.
      this.then(gen, () => {
        const cur = this.cursor();
        if (oldest > cur + 1) this.onGap(cur + 1, oldest - 1);
      });
    }
  }

  // fail ends connection gen and schedules the next one, saying why in
  // words when there is a reason (an ApiError, or a sentence).
  fail(gen, why) {
    if (gen !== this.gen) return;
    this.close();
    const delay = Math.min(MAX_DELAY, MIN_DELAY * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 10);
    let detail = navigator.onLine === false ? 'This device is offline.' : '';
    let wait = delay / 2 + (Math.random() * delay) / 2;
    if (why) detail = typeof why === 'string' ? why : words(why);
    if (why?.retryAfter) wait = Math.max(wait, why.retryAfter * 1000);
    this.setStatus('reconnecting', detail);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
  }
}
