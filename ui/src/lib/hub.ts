import { countListener, type Release } from './tracked';

type Handler<T> = (value: T) => void;

/** A tiny typed emitter whose handlers are counted in `window.__collisionos.listeners()`. */
export class Emitter<M> {
  private handlers = new Map<keyof M, Set<Handler<never>>>();

  on<K extends keyof M>(key: K, fn: Handler<M[K]>): Release {
    let set = this.handlers.get(key);
    if (!set) {
      set = new Set();
      this.handlers.set(key, set);
    }
    const h = fn as Handler<never>;
    set.add(h);
    return countListener(() => {
      set.delete(h);
    });
  }

  emit<K extends keyof M>(key: K, value: M[K]): void {
    const set = this.handlers.get(key);
    if (!set || set.size === 0) return;
    for (const h of Array.from(set)) {
      try {
        (h as Handler<M[K]>)(value);
      } catch (e) {
        console.error(`handler for ${String(key)} failed`, e);
      }
    }
  }

  size(key: keyof M): number {
    return this.handlers.get(key)?.size ?? 0;
  }
}
