// One WebSocket for the whole app. It authenticates, subscribes to the topics the open views want, and after
// a drop (a phone that slept, a restarted gateway) reconnects by itself and resumes from the last sequence it
// saw on each stream, so nothing in between is missed and nothing is shown twice.

const STREAMS = ['events', 'telemetry'];
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const RESUME_MAX = 20000; // further behind than this, reading the REST API afresh is cheaper than a replay
const PONG_WAIT_MS = 4000;

export class Live extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.ws = null;
    this.ready = false; // authenticated and the first subscribe answered
    this.wanted = new Map(); // topic → how many views want it
    this.cursors = null; // {events, telemetry}: the last sequence seen per stream, once known
    this.pending = []; // subscribe requests awaiting their "subscribed"
    this.state = 'idle';
    this.attempt = 0;
    this.pingS = 20;
    this.heard = 0;
    this.pongBy = 0;
    this.role = null;
    this.timer = 0;
    this.handlers = {
      online: () => { if (!this.ws) this.connect(); },
      offline: () => { if (!this.ready) this.setState('offline'); },
      visibilitychange: () => { if (document.visibilityState === 'visible') this.wake(); },
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.handlers.online);
    window.addEventListener('offline', this.handlers.offline);
    document.addEventListener('visibilitychange', this.handlers.visibilitychange);
    this.watchdog = setInterval(() => this.check(), 2000);
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.watchdog);
    window.removeEventListener('online', this.handlers.online);
    window.removeEventListener('offline', this.handlers.offline);
    document.removeEventListener('visibilitychange', this.handlers.visibilitychange);
    this.detach()?.close(1000);
    this.setState('idle');
  }

  /** Ask for topics' messages; returns the function that gives them up again. */
  want(topics) {
    const fresh = [];
    for (const topic of topics) {
      const count = this.wanted.get(topic) ?? 0;
      this.wanted.set(topic, count + 1);
      if (count === 0) fresh.push(topic);
    }
    if (fresh.length && this.ready) this.subscribe(fresh, false);
    return () => this.drop(topics);
  }

  drop(topics) {
    const gone = [];
    for (const topic of topics) {
      const count = (this.wanted.get(topic) ?? 0) - 1;
      if (count > 0) this.wanted.set(topic, count);
      else if (this.wanted.delete(topic)) gone.push(topic);
    }
    if (gone.length && this.ready) this.send({type: 'unsubscribe', topics: gone});
  }

  connect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.detach()?.close(1000);
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}/ws`);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    this.heard = Date.now();
    this.setState(this.attempt ? 'reconnecting' : 'connecting');
    ws.onopen = () => ws.send(JSON.stringify({type: 'auth', token: this.token}));
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.heard = Date.now();
      this.receive(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.detach();
      this.closed(event.code, event.reason);
    };
  }

  /** Forget the current socket (its late events are ignored) and return it. */
  detach() {
    const ws = this.ws;
    this.ws = null;
    this.ready = false;
    this.pending = [];
    this.pongBy = 0;
    return ws;
  }

  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  receive(message) {
    switch (message.type) {
      case 'welcome': return this.welcome(message);
      case 'subscribed': return this.subscribed(message);
      case 'ping': return this.send({type: 'pong'});
      case 'pong': this.pongBy = 0; return undefined;
      case 'error':
        console.warn('stoker live:', message.detail);
        if (this.pending.length && String(message.detail).includes('topic')) this.pending.shift();
        return undefined;
      default:
        if (message.stream && this.cursors) {
          this.cursors[message.stream] = Math.max(this.cursors[message.stream], message.seq);
        }
        this.emit('message', message);
        return undefined;
    }
  }

  welcome(message) {
    this.role = message.role;
    this.pingS = message.ping_s ?? 20;
    this.emit('welcome', message);
    const topics = [...this.wanted.keys()];
    if (!topics.length) {
      this.ready = true;
      this.live();
      return;
    }
    // Resume each stream from its cursor unless so much was missed that a fresh read is cheaper.
    const resume = {};
    let complete = this.cursors !== null;
    for (const stream of STREAMS) {
      if (this.cursors && (message.positions?.[stream] ?? 0) - this.cursors[stream] <= RESUME_MAX) {
        resume[stream] = this.cursors[stream];
      } else {
        complete = false;
      }
    }
    this.subscribe(topics, true, complete, Object.keys(resume).length ? resume : null);
  }

  subscribe(topics, initial, complete = false, resume = null) {
    this.pending.push({topics, initial, complete});
    this.send({type: 'subscribe', topics, ...(resume ? {resume} : {})});
  }

  subscribed(message) {
    const request = this.pending.shift() ?? {topics: message.topics, initial: false, complete: false};
    // Everything of our topics up to these positions was queued before this reply: the cursors may move up.
    this.cursors ??= {events: 0, telemetry: 0};
    for (const stream of STREAMS) {
      this.cursors[stream] = Math.max(this.cursors[stream], message.positions?.[stream] ?? 0);
    }
    const complete = request.complete && !(message.truncated ?? []).length;
    if (request.initial) {
      this.ready = true;
      this.live();
      // Views that came or went while the handshake was in flight.
      const added = [...this.wanted.keys()].filter((t) => !request.topics.includes(t));
      const removed = request.topics.filter((t) => !this.wanted.has(t));
      if (added.length) this.subscribe(added, false);
      if (removed.length) this.send({type: 'unsubscribe', topics: removed});
    }
    this.emit('synced', {topics: request.topics, complete, replayed: message.replayed ?? 0});
  }

  live() {
    this.attempt = 0;
    this.setState('live');
  }

  closed(code, reason) {
    if (this.stopped) return;
    if (code === 4401) {
      this.stopped = true;
      this.emit('unauthorized', reason);
      return;
    }
    this.retry(code === 4429 ? 30000 : undefined);
  }

  retry(delay) {
    if (this.stopped) return;
    const base = delay ?? BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    const wait = Math.round(base * (0.8 + Math.random() * 0.4)); // spread reconnects of many clients
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), wait);
    this.setState(navigator.onLine === false ? 'offline' : 'waiting', {retryAt: Date.now() + wait});
  }

  /** Back from sleep: check the socket still answers; if none is open, try now instead of waiting. */
  wake() {
    if (this.stopped) return;
    if (!this.ws) {
      this.connect();
    } else if (this.ready) {
      this.send({type: 'ping'});
      this.pongBy = Date.now() + PONG_WAIT_MS;
    }
  }

  /** A socket that went silent (no ping for two periods, no pong) is dead even if the OS has not said so. */
  check() {
    if (!this.ws || this.stopped) return;
    const silentFor = Date.now() - this.heard;
    const tooQuiet = this.ready && silentFor > (this.pingS * 2 + 5) * 1000;
    const noPong = this.pongBy && Date.now() > this.pongBy;
    const stuck = !this.ready && silentFor > 15000;
    if (tooQuiet || noPong || stuck) {
      this.detach()?.close(4000);
      this.retry(250);
    }
  }

  setState(state, detail = {}) {
    this.state = state;
    this.emit('state', {state, attempt: this.attempt, ...detail});
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, {detail}));
  }
}
