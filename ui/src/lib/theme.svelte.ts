export type ThemeMode = 'auto' | 'dark' | 'light';

const KEY = 'collisionos.theme';

function load(): ThemeMode {
  try {
    const v = window.localStorage.getItem(KEY);
    if (v === 'dark' || v === 'light' || v === 'auto') return v;
  } catch {
    /* storage disabled */
  }
  return 'auto';
}

class Theme {
  mode = $state<ThemeMode>(load());
  system = $state<'dark' | 'light'>(
    typeof window !== 'undefined' && window.matchMedia?.('(prefers-color-scheme: light)').matches ? 'light' : 'dark',
  );

  get resolved(): 'dark' | 'light' {
    return this.mode === 'auto' ? this.system : this.mode;
  }

  /** Set the page's colours now (before any chart reads them). */
  apply(): void {
    document.documentElement.dataset.theme = this.resolved;
    document.documentElement.style.colorScheme = this.resolved;
  }

  setSystem(v: 'dark' | 'light'): void {
    this.system = v;
    this.apply();
  }

  cycle(): void {
    this.mode = this.mode === 'auto' ? 'dark' : this.mode === 'dark' ? 'light' : 'auto';
    this.apply();
    try {
      window.localStorage.setItem(KEY, this.mode);
    } catch {
      /* storage disabled */
    }
  }
}

export const theme = new Theme();
