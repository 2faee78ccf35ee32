import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

/**
 * Headless Chromium for tests: Debian's package, started through playwright-core. Never
 * downloads a browser; a machine without `/usr/bin/chromium` gets an error saying what to
 * install.
 */

/** Debian's Chromium (`apt-get install chromium`). */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/**
 * `--no-sandbox`: the tests may run as root in a container, where Chromium's sandbox
 * cannot start. `--disable-background-networking`: no update checks or other requests of
 * the browser's own, so the only traffic is the page's.
 */
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'];

export interface ChromiumHandle {
  readonly browser: Browser;
  /**
   * A fresh context (no cookies, cache or service workers shared with another) and a page
   * in it that records what the page did; see {@link PageWatch}.
   */
  newPage(options?: PageOptions): Promise<WatchedPage>;
  /** Closes the browser and every page. Call it in `afterAll`/`finally`. */
  close(): Promise<void>;
}

export interface PageOptions {
  readonly viewport?: { readonly width: number; readonly height: number };
  /** Emulate a phone: honours the page's viewport meta, touch, a device pixel ratio of 3. */
  readonly mobile?: boolean;
  /** Extra HTTP headers sent with every request (an `Authorization`, say). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** What a page did while it was open. */
export interface PageWatch {
  /** Every URL the page requested, in order. */
  readonly requests: string[];
  /** Console messages of type `error` (CSP violations and failed loads land here). */
  readonly consoleErrors: string[];
  /** Uncaught exceptions in the page. */
  readonly pageErrors: string[];
  /** Texts of `alert`/`confirm`/`prompt` dialogs (each is dismissed). */
  readonly dialogs: string[];
}

export interface WatchedPage {
  readonly context: BrowserContext;
  readonly page: Page;
  readonly watch: PageWatch;
}

/**
 * Starts headless Chromium from {@link CHROMIUM_PATH} (or `executablePath`, for the test of
 * this check). Throws, naming the package to install, when it is missing or not executable.
 * The caller must `close()` the handle.
 */
export async function launchChromium(executablePath = CHROMIUM_PATH): Promise<ChromiumHandle> {
  try {
    await access(executablePath, constants.X_OK);
  } catch {
    throw new Error(
      `Chromium not found at ${executablePath}: install Debian's package with \`apt-get install chromium\` ` +
        '(the tests use the system browser and never download one).',
    );
  }
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: ARGS,
    timeout: 60_000,
  });
  const contexts = new Set<BrowserContext>();
  return {
    browser,
    async newPage(options: PageOptions = {}): Promise<WatchedPage> {
      const mobile = options.mobile === true;
      const context = await browser.newContext({
        viewport: options.viewport ?? { width: 1280, height: 800 },
        isMobile: mobile,
        hasTouch: mobile,
        deviceScaleFactor: mobile ? 3 : 1,
        serviceWorkers: 'block',
        ...(options.headers === undefined ? {} : { extraHTTPHeaders: { ...options.headers } }),
      });
      contexts.add(context);
      context.on('close', () => contexts.delete(context));
      const page = await context.newPage();
      const watch: PageWatch = { requests: [], consoleErrors: [], pageErrors: [], dialogs: [] };
      page.on('request', (r) => watch.requests.push(r.url()));
      page.on('console', (m) => {
        if (m.type() === 'error') watch.consoleErrors.push(m.text());
      });
      page.on('pageerror', (e) => watch.pageErrors.push(e.message));
      page.on('dialog', (d) => {
        watch.dialogs.push(d.message());
        void d.dismiss().catch(() => undefined);
      });
      return { context, page, watch };
    },
    async close(): Promise<void> {
      for (const c of contexts) await c.close().catch(() => undefined);
      await browser.close();
    },
  };
}
