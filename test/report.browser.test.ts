// The report in a real browser: headless Chromium (Debian's package; `npm run setup -- --test` installs it where it
// can) loads the report of a fixture run folder and dumps the DOM after its script ran; its console output goes to
// stderr (--enable-logging=stderr), where any message counts as a failure (the page logs nothing of its own: a
// message is an exception, a CSP refusal or a blocked load). A negative control proves the console capture works.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareRuns } from '../src/client/compare';
import { writeHtmlReport } from '../src/client/report';
import { makeReportRun } from './reportFixture';

const CANDIDATES = [process.env.RATIOLOOP_CHROMIUM, 'chromium', 'chromium-browser', 'google-chrome'].filter((x): x is string => Boolean(x));
const browser = CANDIDATES.find((b) => spawnSync(b, ['--version'], { stdio: 'ignore', timeout: 20_000 }).status === 0);
if (!browser) process.stderr.write(`report.browser.test: skipped: no Chromium binary (tried ${CANDIDATES.join(', ')}; \`npm run setup -- --test\` installs Debian's chromium when run as root with apt-get)\n`);

let dir: string;

/** Loads a file in headless Chromium: the DOM after load, and every console line of the page. */
function load(file: string): Promise<{ dom: string; console: string[] }> {
  return new Promise((resolve, reject) => {
    const args = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run',
      `--user-data-dir=${path.join(dir, 'profile')}`, '--enable-logging=stderr', '--v=0', '--virtual-time-budget=2000', '--dump-dom', pathToFileURL(file).href];
    const p = spawn(browser!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.on('error', reject);
    p.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`chromium exited ${code}: ${err.slice(-2000)}`));
      else resolve({ dom: out, console: err.split('\n').filter((l) => /:CONSOLE[:(]/.test(l)) });
    });
  });
}

describe.skipIf(!browser)('report in headless Chromium', () => {
  let report: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'rl-report-browser-'));
    await makeReportRun(path.join(dir, 'runs'), { runId: 'a' });
    await makeReportRun(path.join(dir, 'runs'), { runId: 'b', seed: 9, beta: 2.5, complete: true });
    report = path.join(dir, 'report.html');
    await writeHtmlReport(await compareRuns(path.join(dir, 'runs'), ['a', 'b']), report, path.join(dir, 'runs'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('renders the table and charts with data, runs its script, and logs nothing to the console', async () => {
    const { dom, console: lines } = await load(report);
    expect(lines).toEqual([]);
    expect(dom).toMatch(/<table class="cmp">[\s\S]*<td>a<\/td>/);
    const marks = [...dom.matchAll(/<svg class="chart" data-marks="(\d+)"[\s\S]*?<\/svg>/g)];
    expect(marks.length).toBeGreaterThanOrEqual(10);
    expect(marks.filter((m) => Number(m[1]) > 0 && /<(circle|rect|path)\b/.test(m[0])).length).toBeGreaterThanOrEqual(10);
    // the pager script ran: positions filled in, all but the first five pairs of each block hidden
    expect(dom.match(/class="pos">1–5 of 12</g)?.length).toBe(4);
    expect(dom.match(/<details class="pair hidden"/g)?.length).toBe(4 * 7);
    // the hostile pair text stayed text: its script did not run and its tags are not elements
    expect(dom).not.toMatch(/<img src="x"/);
    expect(dom).toContain('&lt;script&gt;window.__pwned=1&lt;/script&gt;');
  });

  it('negative control: a page whose script breaks the policy or throws is caught', async () => {
    const html = await readFile(report, 'utf8');
    // an edited script no longer matches the CSP hash, so Chromium refuses it and says so on the console
    const tampered = path.join(dir, 'tampered.html');
    await writeFile(tampered, html.replace('var SIZE=5', 'var SIZE=6'));
    const t = await load(tampered);
    expect(t.console.join('\n')).toMatch(/Content Security Policy/);
    expect(t.dom).not.toContain('class="pos">1–');
    const throwing = path.join(dir, 'throwing.html');
    await writeFile(throwing, '<!doctype html><html><body><script>undefinedFunction()</script></body></html>');
    expect((await load(throwing)).console.join('\n')).toContain('Uncaught ReferenceError');
  });
});
