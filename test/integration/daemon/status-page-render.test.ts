import { once } from 'node:events';
import { mkdtemp, readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StatusModel } from '../../../src/daemon/status-model.ts';
import { renderStatusPage, STATUS_PAGE_CSP } from '../../../src/daemon/status-page.ts';
import { launchChromium, type ChromiumHandle, type WatchedPage } from '../../helpers/chromium.ts';
import {
  HOSTILE_SCRIPT,
  healthyModel,
  LONG_WORD,
  troubledModel,
} from '../../helpers/status-fixtures.ts';

/**
 * The status page in a real browser (Debian's Chromium): served from 127.0.0.1 with the
 * CSP the daemon uses, opened at a phone's and a desktop's size. Screenshots are kept in a
 * temp directory whose path the test prints.
 */

const PHONE = { width: 390, height: 844 };
const DESKTOP = { width: 1366, height: 900 };

let chromium: ChromiumHandle;
let server: Server;
let origin: string;
let shots: string;
/** Paths the server was asked for, in order. */
const served: string[] = [];
const pages = new Map<string, StatusModel>([
  ['/healthy', healthyModel()],
  ['/troubled', troubledModel()],
]);

beforeAll(async () => {
  shots = await mkdtemp(join(tmpdir(), 'lethe-status-page-'));
  server = createServer((req, res) => {
    served.push(req.url ?? '');
    const model = pages.get(req.url ?? '');
    if (model === undefined) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res
      .writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'content-security-policy': STATUS_PAGE_CSP,
        'x-content-type-options': 'nosniff',
        'cache-control': 'no-store',
      })
      .end(renderStatusPage(model));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  chromium = await launchChromium();
});

afterAll(async () => {
  await chromium.close();
  server.close();
  console.log(`status page screenshots: ${shots}`);
});

/** Opens a page, waits for it to load, and checks it loaded nothing and ran nothing. */
async function open(
  path: string,
  viewport: { width: number; height: number },
): Promise<WatchedPage> {
  const opened = await chromium.newPage({ viewport, mobile: viewport.width < 600 });
  const response = await opened.page.goto(`${origin}${path}`, { waitUntil: 'load' });
  expect(response?.status()).toBe(200);
  return opened;
}

/** The page requested only itself (and at most its origin's favicon), and ran nothing. */
function expectQuiet(w: WatchedPage, path: string): void {
  const foreign = w.watch.requests.filter((u) => new URL(u).origin !== origin);
  expect(foreign).toEqual([]);
  expect(w.watch.requests.filter((u) => !u.endsWith('/favicon.ico'))).toEqual([`${origin}${path}`]);
  expect(w.watch.consoleErrors).toEqual([]);
  expect(w.watch.pageErrors).toEqual([]);
  expect(w.watch.dialogs).toEqual([]);
}

async function screenshot(w: WatchedPage, name: string): Promise<string> {
  const path = join(shots, `${name}.png`);
  await w.page.screenshot({ path, fullPage: true });
  const png = await readFile(path);
  expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
  console.log(`screenshot: ${path}`);
  return path;
}

/** How far the document is wider than the viewport, in CSS pixels (0 when it fits). */
function horizontalOverflow(w: WatchedPage): Promise<number> {
  return w.page.evaluate(
    () =>
      Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) -
      document.documentElement.clientWidth,
  );
}

/**
 * Boxes whose content sticks out of them sideways (text running past a card's edge, say),
 * described as `tag.class[data-testid]`. Scroll containers and what they clip (the visually
 * hidden table headers of the phone layout) are exempt: scrolling or clipping is their job.
 */
function overflowingBoxes(w: WatchedPage): Promise<string[]> {
  return w.page.evaluate(() => {
    const clipped = (el: Element): boolean => {
      for (let e: Element | null = el; e !== null; e = e.parentElement) {
        if (getComputedStyle(e).overflowX !== 'visible') return true;
      }
      return false;
    };
    const out: string[] = [];
    for (const el of Array.from(document.body.querySelectorAll('*'))) {
      const style = getComputedStyle(el);
      if (style.display === 'inline' || style.display === 'none' || clipped(el)) continue;
      if (el.scrollWidth > el.clientWidth + 1) {
        const id = el.getAttribute('data-testid');
        const what = `${el.tagName.toLowerCase()}.${el.className}${id === null ? '' : `[${id}]`}`;
        out.push(`${what} by ${el.scrollWidth - el.clientWidth}px`);
      }
    }
    return out;
  });
}

describe('status page in Chromium', () => {
  for (const [name, viewport] of [
    ['phone', PHONE],
    ['desktop', DESKTOP],
  ] as const) {
    it(`shows the failed drill as failed, the breached RPO and the overdue erasure (${name})`, async () => {
      const w = await open('/troubled', viewport);
      try {
        const { page } = w;
        const banner = page.getByTestId('health');
        expect(await banner.getAttribute('data-state')).toBe('attention');
        expect(await banner.isVisible()).toBe(true);
        const bannerText = await banner.innerText();
        expect(bannerText).toMatch(/RPO breached/);
        expect(bannerText).toMatch(/last restore drill failed/);
        expect(bannerText).toMatch(/audit chain is broken/);

        // The newest drill, first in the list, is failed: by its hook, its visible text and its colour.
        const result = page.getByTestId('drill-result').first();
        expect(await result.isVisible()).toBe(true);
        expect(await result.getAttribute('data-state')).toBe('failed');
        expect((await result.innerText()).toLowerCase()).toBe('failed');
        const colours = await result.evaluate((el) => {
          const style = getComputedStyle(el);
          return { color: style.color, background: style.backgroundColor };
        });
        const passed = page.locator('[data-testid="drill-result"][data-state="passed"]').first();
        expect(await passed.isVisible()).toBe(true);
        const passedColour = await passed.evaluate((el) => getComputedStyle(el).color);
        expect(colours.color).not.toBe(passedColour);
        expect(await page.getByTestId('last-drill').getAttribute('data-state')).toBe('failed');

        expect(await page.getByTestId('rpo').getAttribute('data-state')).toBe('breached');
        expect(await page.getByTestId('rpo').innerText()).toMatch(/breached/i);
        const overdue = page.locator('[data-testid="erasure"][data-state="overdue"]');
        expect(await overdue.count()).toBe(1);
        expect((await overdue.innerText()).toLowerCase()).toContain('overdue');

        // Hostile strings are text: present as typed, and they added no element.
        expect(await page.locator('script, img, iframe, object, embed, form').count()).toBe(0);
        expect(await page.locator('a[href^="javascript:"]').count()).toBe(0);
        expect(await page.locator('body').innerText()).toContain(HOSTILE_SCRIPT);
        expect(await page.locator('style').count()).toBe(1);

        // Every snapshot of the model has a row.
        expect(await page.getByTestId('snapshot').count()).toBe(troubledModel().snapshots.length);

        const overflow = await horizontalOverflow(w);
        expect(
          overflow,
          `the page is ${overflow}px wider than the ${name} viewport`,
        ).toBeLessThanOrEqual(0);
        expect(await overflowingBoxes(w)).toEqual([]);
        expect(await page.locator('body').innerText()).toContain(LONG_WORD.slice(0, 40));
        await screenshot(w, `troubled-${name}`);
        expectQuiet(w, '/troubled');
      } finally {
        await w.context.close();
      }
    });

    it(`shows a healthy deployment as OK with its snapshots (${name})`, async () => {
      const w = await open('/healthy', viewport);
      try {
        const { page } = w;
        const banner = page.getByTestId('health');
        expect(await banner.getAttribute('data-state')).toBe('ok');
        expect(await banner.innerText()).toMatch(/^OK/);
        const model = healthyModel();
        expect(await page.getByTestId('snapshot').count()).toBe(model.snapshots.length);
        const body = await page.locator('body').innerText();
        for (const s of model.snapshots) expect(body).toContain(s.id);
        expect(
          await page.locator('[data-testid="drill-result"][data-state="failed"]').count(),
        ).toBe(0);
        // The next backup in the schedule's zone: 12:00 UTC is 13:00 in Berlin in March.
        expect(body).toContain('2026-03-05T13:00:00+01:00');
        expect(await horizontalOverflow(w)).toBeLessThanOrEqual(0);
        expect(await overflowingBoxes(w)).toEqual([]);
        await screenshot(w, `healthy-${name}`);
        expectQuiet(w, '/healthy');
      } finally {
        await w.context.close();
      }
    });
  }

  it('collapses tables into cards at phone width and keeps them as tables on a desktop', async () => {
    const layouts: Record<string, { display: string; headerVisible: boolean; label: string }> = {};
    for (const [name, viewport] of [
      ['phone', PHONE],
      ['desktop', DESKTOP],
    ] as const) {
      const w = await open('/troubled', viewport);
      try {
        layouts[name] = await w.page.evaluate(() => {
          const table = document.querySelector('[data-testid="drills-table"]');
          const cell = table?.querySelector('td');
          const head = table?.querySelector('thead');
          if (!table || !cell || !head) throw new Error('drills table missing');
          return {
            display: getComputedStyle(table).display,
            headerVisible: head.getBoundingClientRect().height > 2,
            label: getComputedStyle(cell, '::before').content,
          };
        });
      } finally {
        await w.context.close();
      }
    }
    expect(layouts.phone).toEqual({ display: 'block', headerVisible: false, label: '"Result"' });
    expect(layouts.desktop).toEqual({ display: 'table', headerVisible: true, label: 'none' });
  });

  it('a machine without Chromium is told what to install', async () => {
    await expect(launchChromium('/nonexistent/chromium')).rejects.toThrow(
      "Chromium not found at /nonexistent/chromium: install Debian's package with `apt-get install chromium`",
    );
  });

  it('answers only the page itself: nothing else was requested from the server', () => {
    expect(
      served.filter((p) => p !== '/healthy' && p !== '/troubled' && p !== '/favicon.ico'),
    ).toEqual([]);
  });
});
