// The API token: `?token=` in the URL (kept in sessionStorage, then removed from the visible
// URL), or `window.__COLLISIONOS_TOKEN__` injected by the desktop shell.

const KEY = 'collisionos.token';

let token: string | null = null;

function storage(): Storage | null {
  try {
    return window.sessionStorage;
  } catch {
    return null;
  }
}

/** Read the token once at start-up; strips `?token=` from the address bar. */
export function initToken(): string | null {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl) {
    token = fromUrl;
    storage()?.setItem(KEY, fromUrl);
    url.searchParams.delete('token');
    const clean = url.pathname + (url.search === '?' ? '' : url.search) + url.hash;
    window.history.replaceState(window.history.state, '', clean);
    return token;
  }
  if (typeof window.__COLLISIONOS_TOKEN__ === 'string' && window.__COLLISIONOS_TOKEN__) {
    token = window.__COLLISIONOS_TOKEN__;
    return token;
  }
  token = storage()?.getItem(KEY) ?? null;
  return token;
}

export function getToken(): string | null {
  return token;
}

/** Replace the token (the user pasted a new one after a 401). */
export function setToken(value: string): void {
  let v = value.trim();
  try {
    // Accept the whole UI URL the headless backend prints.
    const u = new URL(v);
    v = u.searchParams.get('token') ?? v;
  } catch {
    /* a bare token */
  }
  token = v || null;
  if (token) storage()?.setItem(KEY, token);
  else storage()?.removeItem(KEY);
}
