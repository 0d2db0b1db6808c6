// What the page exposes for tests (see src/lib/tracked.ts).
export {};

declare global {
  interface Window {
    __collisionos?: {
      listeners(): number;
      streams(): number;
      timers(): number;
      observers(): number;
      snapshot(): { listeners: number; streams: number; timers: number; observers: number };
    };
  }
}
