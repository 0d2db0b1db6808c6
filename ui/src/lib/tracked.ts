// The one place where the page registers listeners, event streams, timers and resize
// observers. Each registration increments a live counter and hands back a release function
// that decrements it exactly once; `Scope` collects releases so a view frees everything it
// holds in one call when it is destroyed. `window.__collisionos` exposes the counters, so a
// test can switch views a thousand times and see the same numbers.
//
// (The old dashboard's `useRealtimeData` hook subscribed on every render and never let go;
// here nothing can be registered without a matching release.)

export type Release = () => void;

const live = { listeners: 0, streams: 0, timers: 0, observers: 0 };

/** Wrap a release so it runs at most once and keeps the counter honest. */
function once(kind: keyof typeof live, release: () => void): Release {
  let done = false;
  live[kind]++;
  return () => {
    if (done) return;
    done = true;
    live[kind]--;
    release();
  };
}

/** Count a listener that lives in our own emitter (see hub.ts). */
export function countListener(release: () => void): Release {
  return once('listeners', release);
}

/** `target.addEventListener(type, fn)`, counted; the returned function removes it. */
export function listen<E extends Event = Event>(
  target: EventTarget,
  type: string,
  fn: (event: E) => void,
  options?: AddEventListenerOptions,
): Release {
  const handler = fn as EventListener;
  target.addEventListener(type, handler, options);
  return once('listeners', () => target.removeEventListener(type, handler, options));
}

/** `setInterval`, counted. */
export function every(ms: number, fn: () => void): Release {
  const id = setInterval(fn, ms);
  return once('timers', () => clearInterval(id));
}

/** `setTimeout`, counted until it fires or is cancelled. */
export function after(ms: number, fn: () => void): Release {
  let release: Release = () => {};
  const id = setTimeout(() => {
    release();
    fn();
  }, ms);
  release = once('timers', () => clearTimeout(id));
  return release;
}

/** A `ResizeObserver` on one element, counted. */
export function observeResize(el: Element, fn: (rect: DOMRectReadOnly) => void): Release {
  const ro = new ResizeObserver((entries) => {
    const last = entries[entries.length - 1];
    if (last) fn(last.contentRect);
  });
  ro.observe(el);
  return once('observers', () => ro.disconnect());
}

/** An `EventSource` whose listeners are counted and removed when it is closed. */
export class TrackedStream {
  readonly source: EventSource;
  private releases: Release[] = [];
  private closeRelease: Release;

  constructor(url: string) {
    this.source = new EventSource(url);
    this.closeRelease = once('streams', () => this.source.close());
  }

  on(type: string, fn: (event: MessageEvent) => void): this {
    this.releases.push(listen<MessageEvent>(this.source, type, fn));
    return this;
  }

  get readyState(): number {
    return this.source.readyState;
  }

  close(): void {
    for (const r of this.releases.splice(0)) r();
    this.closeRelease();
  }
}

export function openStream(url: string): TrackedStream {
  return new TrackedStream(url);
}

/**
 * Everything one component or service holds. `dispose()` releases it all (idempotent); after
 * that, further registrations are released immediately, so a late callback cannot leak.
 */
export class Scope {
  private releases: Release[] = [];
  private aborts = new Set<AbortController>();
  private disposed = false;

  get closed(): boolean {
    return this.disposed;
  }

  add(release: Release): Release {
    if (this.disposed) {
      release();
      return release;
    }
    this.releases.push(release);
    return () => {
      const i = this.releases.indexOf(release);
      if (i >= 0) this.releases.splice(i, 1);
      release();
    };
  }

  listen<E extends Event = Event>(
    target: EventTarget,
    type: string,
    fn: (event: E) => void,
    options?: AddEventListenerOptions,
  ): Release {
    return this.add(listen(target, type, fn, options));
  }

  every(ms: number, fn: () => void): Release {
    return this.add(every(ms, fn));
  }

  after(ms: number, fn: () => void): Release {
    // Drop the entry once it fired so a long-lived scope does not accumulate spent timers.
    let remove: Release = () => {};
    const release = after(ms, () => {
      remove();
      fn();
    });
    remove = this.add(release);
    return remove;
  }

  observeResize(el: Element, fn: (rect: DOMRectReadOnly) => void): Release {
    return this.add(observeResize(el, fn));
  }

  /** An AbortSignal aborted when the scope is disposed (for fetches the view started). */
  signal(): AbortSignal {
    const ctrl = new AbortController();
    if (this.disposed) ctrl.abort();
    else this.aborts.add(ctrl);
    return ctrl.signal;
  }

  /** Forget a finished fetch's controller. */
  settle(signal: AbortSignal): void {
    for (const c of this.aborts) if (c.signal === signal) this.aborts.delete(c);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const r of this.releases.splice(0).reverse()) r();
    for (const c of this.aborts) c.abort();
    this.aborts.clear();
  }
}

export interface Counters {
  listeners(): number;
  streams(): number;
  timers(): number;
  observers(): number;
  snapshot(): { listeners: number; streams: number; timers: number; observers: number };
}

export const counters: Counters = {
  listeners: () => live.listeners,
  streams: () => live.streams,
  timers: () => live.timers,
  observers: () => live.observers,
  snapshot: () => ({ ...live }),
};

declare global {
  interface Window {
    __collisionos?: Counters;
    __COLLISIONOS_TOKEN__?: string;
    __COLLISIONOS_API__?: string;
  }
}

if (typeof window !== 'undefined') {
  window.__collisionos = counters;
}
