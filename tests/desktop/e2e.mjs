// Desktop e2e for CollisionOS Monitor, driven by run.sh (which starts Xvfb, a session bus with
// the tray/notification host of sni_host.py, and tauri-driver). Each scenario launches the built
// app, checks what a shop manager would see, quits it through a real path and proves the exit:
// code 0, the backend's shutdown logged before it, and no app or WebKit process left.
//
//   node e2e.mjs            (env from run.sh: APP, WRAPPER, RUN_DIR, ARTIFACTS, SNI_STATE)

import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { remote } from 'webdriverio';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run tests/desktop/run.sh)`);
  return v;
};
const APP = env('APP');
const WRAPPER = env('WRAPPER');
const RUN_DIR = env('RUN_DIR');
const ARTIFACTS = env('ARTIFACTS');
const SNI_STATE = env('SNI_STATE');
const SNI_HOST = new URL('./sni_host.py', import.meta.url).pathname;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let passed = 0;
let failed = 0;

function check(cond, what, detail = '') {
  if (cond) {
    passed += 1;
    console.log(`  ok   ${what}`);
  } else {
    failed += 1;
    console.log(`  FAIL ${what}${detail ? `: ${detail}` : ''}`);
  }
  return cond;
}

async function until(what, fn, timeoutMs, everyMs = 250) {
  const end = Date.now() + timeoutMs;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
}

function host(...args) {
  return execFileSync('/usr/bin/python3', [SNI_HOST, ...args], { encoding: 'utf8' });
}
const tray = () => JSON.parse(host('tray'));
const hostState = () => JSON.parse(readFileSync(SNI_STATE, 'utf8'));

function pgrep(pattern) {
  try {
    return execFileSync('pgrep', ['-f', pattern], { encoding: 'utf8' }).split('\n').filter(Boolean);
  } catch {
    return []; // exit 1: nothing matched
  }
}
/** The app (pid from the wrapper) and the processes under it, WebKit's web and network
 *  processes among them. Taken while it runs: after the exit they would be orphans, and other
 *  WebKit programs on the machine must not count. */
function processTree(files) {
  const root = readFileSync(files.pidFile, 'utf8').trim();
  const rows = execFileSync('ps', ['-e', '-o', 'pid=,ppid=,comm='], { encoding: 'utf8' })
    .trim().split('\n').map((l) => l.trim().split(/\s+/));
  const inside = new Set([root]);
  for (let changed = true; changed;) {
    changed = false;
    for (const [pid, ppid] of rows) {
      if (inside.has(ppid) && !inside.has(pid)) { inside.add(pid); changed = true; }
    }
  }
  const children = rows.filter(([pid]) => inside.has(pid) && pid !== root).map(([pid, , comm]) => ({ pid, comm }));
  return { root, children };
}
const alive = (pid) => existsSync(`/proc/${pid}`);
const leftovers = (tree) => ({
  app: pgrep(`^${APP}`),
  tree: [tree?.root, ...(tree?.children ?? []).map((c) => c.pid)].filter((p) => p && alive(p)),
});
const noneLeft = (l) => l.app.length + l.tree.length === 0;

const near = (rgb, want, tol = 12) => rgb && want.every((c, i) => Math.abs(rgb[i] - c) <= tol);
const GREEN = [0x16, 0xa3, 0x4a];
const RED = [0xdc, 0x26, 0x26];

/** Per-scenario files: the wrapper writes the app's pid and exit code; its stderr is kept. */
function scenarioFiles(name) {
  const dir = join(RUN_DIR, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return {
    dir,
    exitFile: join(dir, 'exit-code'),
    pidFile: join(dir, 'pid'),
    logFile: join(ARTIFACTS, `app-${name}.log`),
    dataDir: join(dir, 'data'),
  };
}

const shq = (v) => `'${String(v).replace(/'/g, "'\\''")}'`;

/** What the wrapper (run.sh) sources before starting the app. */
function writeScenarioEnv(files, extraEnv = {}) {
  const vars = {
    E2E_EXIT_FILE: files.exitFile,
    E2E_PID_FILE: files.pidFile,
    E2E_LOG_FILE: files.logFile,
    COLLISIONOS_DATA_DIR: files.dataDir,
    ...extraEnv,
  };
  const text = Object.entries(vars).map(([k, v]) => `export ${k}=${shq(v)}`).join('\n') + '\n';
  writeFileSync(join(RUN_DIR, 'scenario.env'), text);
}

/** Starts a WebDriver session on the app (through the wrapper, so its exit code is seen). */
async function launch(name, extraEnv = {}) {
  const files = scenarioFiles(name);
  // The app gets tauri-driver's environment, not ours: the wrapper reads the scenario's here.
  writeScenarioEnv(files, extraEnv);
  const started = Date.now();
  const browser = await remote({
    hostname: '127.0.0.1',
    port: 4444,
    logLevel: 'warn',
    connectionRetryTimeout: 60_000,
    capabilities: {
      'tauri:options': { application: WRAPPER },
      'wdio:enforceWebDriverClassic': true,
    },
  });
  return { browser, files, started };
}

async function waitForExit(files, ms = 20_000) {
  const code = await until('the app to exit', () =>
    existsSync(files.exitFile) ? readFileSync(files.exitFile, 'utf8').trim() : null, ms);
  return Number(code);
}

async function endSession(browser) {
  try {
    await browser.deleteSession();
  } catch {
    // The app is gone already; WebKitWebDriver may say so.
  }
}

/** Call before asking the app to quit: what must be gone afterwards. */
function beforeQuit(files, how) {
  const tree = processTree(files);
  const comms = tree.children.map((c) => c.comm);
  check(comms.some((c) => c.startsWith('WebKitWebProces')) && comms.some((c) => c.startsWith('WebKitNetworkP')),
    `${how}: the app runs its WebKit web and network processes`, JSON.stringify(tree.children));
  return tree;
}

async function assertCleanExit(files, how, tree) {
  const code = await waitForExit(files);
  check(code === 0, `${how}: the app exits with code 0`, `code ${code}`);
  const left = await until('no app or WebKit process', async () => {
    const l = leftovers(tree);
    return noneLeft(l) ? l : null;
  }, 10_000).catch(() => leftovers(tree));
  check(noneLeft(left), `${how}: no collisionos-desktop or WebKit process is left`, JSON.stringify(left));
  const log = existsSync(files.logFile)
    ? readFileSync(files.logFile, 'utf8').replace(/\x1b\[[0-9;]*m/g, '') // tracing's colours
    : '';
  const stopped = log.indexOf('backend stopped');
  check(log.includes('shutdown complete') && stopped >= 0,
    `${how}: the backend's shutdown ran before the exit`, 'no "shutdown complete"/"backend stopped" in the log');
  check(/backend stopped[^\n]*clean=true/.test(log), `${how}: the shutdown was clean`);
}

/** Waits for the health view; on a timeout saves what the window shows instead. */
async function healthView(browser, name) {
  try {
    await until('the health view', () => browser.$('[data-view="health"]').isExisting(), 30_000);
  } catch (e) {
    try {
      screenshot(`${name}-no-health-view`);
      const page = await browser.execute(() => ({ url: location.href, html: document.documentElement.outerHTML }));
      writeFileSync(join(ARTIFACTS, `${name}-no-health-view.html`), `<!-- ${page.url} -->\n${page.html}`);
      const probe = await browser.executeAsync((done) => {
        const src = document.querySelector('script[type=module]')?.src;
        if (!src) return done('no module script');
        const errs = []; window.addEventListener('error', (e) => errs.push(String(e.message))); window.addEventListener('unhandledrejection', (e) => errs.push(String(e.reason)));
        import(src + '?again').then(() => setTimeout(() => done(`imported ${src}; #app: ${document.getElementById('app').innerHTML.slice(0, 200)}; errors: ${errs.join(' | ')}`), 1500), (e) => done(`import ${src} failed: ${e} ${e?.stack ?? ''}`));
      });
      console.log(`       module probe: ${probe}`);
    } catch (d) {
      console.log(`       (no diagnostics: ${d.message})`);
    }
    throw e;
  }
}

/** What X shows (the real window's pixels). WebKitWebDriver's own screenshot can lag behind
 *  what is painted under Xvfb, so the artifacts come from the display. */
function screenshot(name) {
  execFileSync('import', ['-window', 'root', join(ARTIFACTS, `${name}.png`)]);
}

async function healthFigures(browser) {
  return browser.execute(() => {
    const out = {};
    for (const el of document.querySelectorAll('[data-testid^="figure-"]')) {
      out[el.getAttribute('data-testid')] = el.getAttribute('data-value');
    }
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
async function scenarioMain() {
  console.log('scenario: window, live health, tray, single instance, Quit from the tray menu');
  const { browser, files, started } = await launch('main');
  try {
    await healthView(browser, 'main');
    check(true, `the window opens on the health view (${Date.now() - started} ms after launch)`);
    const size = await browser.getWindowSize();
    check(size.width >= 800 && size.height >= 560, 'the window has a usable size', JSON.stringify(size));

    const handoff = await browser.execute(() => ({
      api: window.__COLLISIONOS_API__,
      tokenLength: typeof window.__COLLISIONOS_TOKEN__ === 'string' ? window.__COLLISIONOS_TOKEN__.length : 0,
      origin: location.origin,
    }));
    check(/^http:\/\/127\.0\.0\.1:\d+$/.test(handoff.api ?? ''), 'the shell hands the API address to its webview', handoff.api);
    check(handoff.tokenLength >= 16, 'the shell hands the API token to its webview');

    // The content security policy: the API's origin is reachable, another local port is not
    // (a listening server that must see no request, so "blocked" is not "refused").
    const { createServer } = await import('node:http');
    let hits = 0;
    const other = createServer((req, res) => { hits += 1; res.end('x'); });
    await new Promise((r) => other.listen(0, '127.0.0.1', r));
    const otherUrl = `http://127.0.0.1:${other.address().port}/`;
    const probe = await browser.executeAsync((api, otherUrl, done) => {
      const tryFetch = (url) => fetch(url).then((r) => `status ${r.status}`, (e) => `error ${e}`);
      Promise.all([tryFetch(`${api}/api/health`), tryFetch(otherUrl)]).then(done);
    }, handoff.api, otherUrl);
    other.close();
    check(probe[0] === 'status 200', 'the page can call the backend API', probe[0]);
    check(probe[1].startsWith('error') && hits === 0, 'the page cannot reach any other origin (CSP connect-src)',
      `${probe[1]}, ${hits} request(s) arrived`);

    // Live figures: the same figures read twice must differ (a new sample every second).
    const first = await until('numeric health figures', async () => {
      const f = await healthFigures(browser);
      return Number.isFinite(parseFloat(f['figure-rss'])) ? f : null;
    }, 20_000);
    check(parseFloat(first['figure-rss']) > 1, 'the memory figure shows the process RSS', first['figure-rss']);
    const changed = await until('a figure to change', async () => {
      const now = await healthFigures(browser);
      const diff = Object.keys(now).filter((k) => now[k] !== first[k]);
      return diff.length ? { now, diff } : null;
    }, 20_000).catch(() => null);
    check(changed !== null, 'the figures are live (they change between two reads)',
      changed ? '' : JSON.stringify(first));
    if (changed) console.log(`       changed: ${changed.diff.map((k) => `${k} ${first[k]} -> ${changed.now[k]}`).join(', ')}`);
    const stale = await browser.$('[data-testid="card-memory"]').getAttribute('data-stale');
    check(stale !== 'true', 'the memory card is not marked stale', stale);
    await sleep(8000); // a few more points on the charts for the screenshot
    screenshot('health');

    // The tray as the desktop sees it: an item registered on the session bus, green, with menu.
    const t = await until('the tray item', () => {
      const info = tray();
      return info.registered && info.colour ? info : null;
    }, 10_000);
    check(t.registered, `a tray item is registered with the StatusNotifierWatcher (${t.service}${t.path})`);
    check(near(t.colour, GREEN), 'the tray icon is green while healthy', JSON.stringify(t.colour));
    check(JSON.stringify(t.menu_labels) === JSON.stringify(['Open CollisionOS Monitor', 'Quit']),
      'the tray menu has Open and Quit', JSON.stringify(t.menu_labels));

    // Single instance: a second launch hands over and exits; the first keeps running.
    const second = spawn(APP, [], { stdio: ['ignore', 'pipe', 'pipe'] });
    let secondErr = '';
    second.stderr.on('data', (d) => { secondErr += d; });
    const secondCode = await new Promise((resolve) => {
      const timer = setTimeout(() => { second.kill('SIGKILL'); resolve('timeout'); }, 20_000);
      second.on('exit', (code) => { clearTimeout(timer); resolve(code); });
    });
    check(secondCode === 0, 'a second launch exits with code 0 (single instance)', `${secondCode} ${secondErr.slice(-300)}`);
    check(pgrep(`^${APP}`).length === 1, 'only the first instance is running');
    check(await browser.$('[data-view="health"]').isExisting(), 'the first window is still there');

    // Quit from the tray menu, as a panel sends it (dbusmenu "clicked").
    const tree = beforeQuit(files, 'tray Quit');
    host('click', 'Quit');
    await assertCleanExit(files, 'tray Quit', tree);
  } finally {
    await endSession(browser);
  }
}

async function scenarioAlerts() {
  console.log('scenario: a critical memory alert turns the tray red and notifies once; closing the window quits');
  const { browser, files } = await launch('alerts', {
    // The app's RSS is far above 16 MB: the first check raises a critical alert.
    MAX_MEMORY_MB: '16',
    MEMORY_WARNING_THRESHOLD: '8',
    MEMORY_CHECK_INTERVAL: '1000',
  });
  try {
    await healthView(browser, 'alerts');
    const t = await until('a red tray icon', () => {
      const info = tray();
      return info.registered && near(info.colour, RED) ? info : null;
    }, 20_000).catch(() => tray());
    check(near(t.colour, RED), 'the tray icon turns red on a critical memory level', JSON.stringify(t.colour));
    const note = await until('a desktop notification', () =>
      hostState().notifications.find((n) => n.summary === 'Memory use is critical'), 20_000).catch(() => null);
    check(note !== null, 'a desktop notification says memory use is critical',
      JSON.stringify(hostState().notifications));
    if (note) console.log(`       notification: "${note.summary}" / "${note.body}"`);
    await sleep(5000); // more checks run every second: the rate limit must hold them back
    const critical = hostState().notifications.filter((n) => n.summary === 'Memory use is critical');
    check(critical.length === 1, 'only one critical notification in the window', String(critical.length));
    screenshot('health-critical');

    // Closing the window quits by default: the close button, as a window manager reports it.
    // (WebDriver's "close window" only closes the page, which no user can do.)
    const tree = beforeQuit(files, 'window close');
    host('close', 'CollisionOS Monitor');
    await assertCleanExit(files, 'window close', tree);
  } finally {
    await endSession(browser);
  }
}

async function scenarioCloseToTray() {
  console.log('scenario: COLLISIONOS_CLOSE_TO_TRAY=true: closing hides, the tray opens it again');
  const { browser, files } = await launch('tray', { COLLISIONOS_CLOSE_TO_TRAY: 'true' });
  const viewable = () => JSON.parse(host('mapped', 'CollisionOS Monitor')).viewable;
  try {
    await healthView(browser, 'tray');
    check(viewable() === 1, 'the window is on screen');
    console.log(`       ${host('close', 'CollisionOS Monitor').trim()}`);
    await until('the window to hide', () => viewable() === 0, 10_000).catch(() => null);
    check(viewable() === 0, 'closing the window hides it');
    await sleep(2000);
    check(!existsSync(files.exitFile), 'and the app keeps running in the tray');
    host('click', 'Open CollisionOS Monitor');
    await until('the window to come back', () => viewable() === 1, 10_000).catch(() => null);
    check(viewable() === 1, 'tray Open shows the window again');
    check(await browser.$('[data-view="health"]').isExisting(), 'with the health view still in it');
    const tree = beforeQuit(files, 'tray Quit after close-to-tray');
    host('click', 'Quit');
    await assertCleanExit(files, 'tray Quit after close-to-tray', tree);
  } finally {
    await endSession(browser);
  }
}

async function scenarioSignal() {
  console.log('scenario: SIGTERM takes the same shutdown path');
  const files = scenarioFiles('signal');
  writeScenarioEnv(files);
  const child = spawn(WRAPPER, [], { stdio: 'ignore', detached: true });
  child.unref();
  const pid = await until('the app pid', () =>
    existsSync(files.pidFile) ? Number(readFileSync(files.pidFile, 'utf8')) : null, 10_000);
  await until('the backend to start', () =>
    existsSync(files.logFile) && readFileSync(files.logFile, 'utf8').includes('window created'), 30_000);
  await until('the WebKit processes', () => processTree(files).children.length >= 2, 20_000).catch(() => null);
  const tree = beforeQuit(files, 'SIGTERM');
  process.kill(pid, 'SIGTERM');
  await assertCleanExit(files, 'SIGTERM', tree);
}

async function scenarioNoDisplay() {
  console.log('scenario: no display');
  const childEnv = { ...process.env, COLLISIONOS_DATA_DIR: join(RUN_DIR, 'nodisplay') };
  delete childEnv.DISPLAY;
  delete childEnv.WAYLAND_DISPLAY;
  const r = spawnSync(APP, [], { env: childEnv, encoding: 'utf8', timeout: 20_000 });
  const out = `${r.stdout}${r.stderr}`;
  check(r.status !== 0 && r.status !== null, 'without a display the app exits non-zero', `status ${r.status}`);
  check(out.includes('needs a graphical display; run `collisionos --headless`'),
    'and says to run the headless backend', out.slice(-300));
  check(!out.includes('panicked'), 'without a panic trace', out.slice(-300));

  // A display is named but cannot be opened (GTK init fails): the same answer.
  const bad = spawnSync(APP, [], { env: { ...childEnv, DISPLAY: ':4711' }, encoding: 'utf8', timeout: 20_000 });
  const badOut = `${bad.stdout}${bad.stderr}`;
  check(bad.status !== 0 && bad.status !== null && badOut.includes('needs a graphical display') && !badOut.includes('panicked'),
    'an unusable DISPLAY gets the same message and exit, no panic', `status ${bad.status}: ${badOut.slice(-300)}`);

  // A malformed setting stops it before anything starts, naming the variable: exit 2.
  const cfg = spawnSync(APP, [], { env: { ...process.env, MAX_MEMORY_MB: 'lots', COLLISIONOS_DATA_DIR: join(RUN_DIR, 'badcfg') }, encoding: 'utf8', timeout: 20_000 });
  const cfgOut = `${cfg.stdout}${cfg.stderr}`;
  check(cfg.status === 2 && cfgOut.includes('MAX_MEMORY_MB'), 'a malformed setting exits 2 naming the variable',
    `status ${cfg.status}: ${cfgOut.slice(-300)}`);
  const shell = spawnSync(APP, [], { env: { ...process.env, COLLISIONOS_CLOSE_TO_TRAY: 'maybe', COLLISIONOS_DATA_DIR: join(RUN_DIR, 'badcfg') }, encoding: 'utf8', timeout: 20_000 });
  check(shell.status === 2 && `${shell.stderr}`.includes('COLLISIONOS_CLOSE_TO_TRAY'),
    'so does a malformed desktop setting', `status ${shell.status}: ${shell.stderr.slice(-300)}`);
}

async function scenarioPortTaken() {
  console.log('scenario: the port is taken by another program');
  const { createServer } = await import('node:net');
  const blocker = createServer();
  await new Promise((r) => blocker.listen(0, '127.0.0.1', r));
  const port = blocker.address().port;
  const r = spawnSync(APP, [], {
    env: { ...process.env, PORT: String(port), COLLISIONOS_DATA_DIR: join(RUN_DIR, 'port-taken') },
    encoding: 'utf8',
    timeout: 30_000,
  });
  blocker.close();
  const out = `${r.stdout}${r.stderr}`.replace(/\x1b\[[0-9;]*m/g, '');
  check(r.status === 1, 'the app exits with code 1', `status ${r.status} signal ${r.signal}`);
  check(out.includes('could not start') && out.includes(`127.0.0.1:${port}`),
    'and says it cannot listen on that address', out.slice(-400));
  check(!out.includes('panicked'), 'without a panic trace', out.slice(-400));
  check(pgrep(`^${APP}`).length === 0, 'and leaves no process');
}

async function main() {
  const scenarios = (process.env.SCENARIOS ? process.env.SCENARIOS.split(",").map((n) => ({ nodisplay: scenarioNoDisplay, main: scenarioMain, alerts: scenarioAlerts, tray: scenarioCloseToTray, signal: scenarioSignal, port: scenarioPortTaken })[n]) : [scenarioNoDisplay, scenarioPortTaken, scenarioMain, scenarioAlerts, scenarioCloseToTray, scenarioSignal]);
  for (const s of scenarios) {
    try {
      await s();
    } catch (e) {
      check(false, `${s.name} ran to the end`, e.stack ?? String(e));
      // Leave nothing behind for the next scenario.
      for (const pid of pgrep(`^${APP}`)) {
        try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
      }
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

await main();
