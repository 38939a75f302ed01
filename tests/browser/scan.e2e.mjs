// End-to-end test of the scan page in Debian's headless Chromium, driven by playwright-core.
// Run by tests/tests/browser.rs, which starts a federation, mints items and passes them in
// HALLMARK_E2E (JSON). Exits non-zero on the first failed expectation; saves screenshots.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const cfg = JSON.parse(process.env.HALLMARK_E2E);
// { base, federation, operators: [url], shots, authentic: {id, owner, product, serial},
//   locked: {id}, label_png }
mkdirSync(cfg.shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

const viewports = {
  phone: { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 },
  desktop: { viewport: { width: 1280, height: 900 } },
};

let failures = 0;
async function step(name, size, fn) {
  const context = await browser.newContext(viewports[size]);
  const page = await context.newPage();
  const problems = [];
  // Chromium logs every HTTP error a fetch gets as a console error; an unknown item is a 404
  // from each operator by design, so those (and only those) are not JavaScript errors.
  page.on("console", (m) => {
    if (m.type() === "error" && !/Failed to load resource: the server responded with a status of 404/.test(m.text())) {
      problems.push(`console: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  try {
    await fn(page);
    assert.deepEqual(problems, [], "no JavaScript errors in the console");
    console.log(`ok   ${name} (${size})`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name} (${size}): ${e.message}\n${problems.join("\n")}`);
  } finally {
    await page.screenshot({ path: join(cfg.shots, `${name}-${size}.png`), fullPage: true }).catch(() => {});
    await context.close();
  }
}

const scanUrl = (id) => `${cfg.base}/scan/?item=${id}&federation=${cfg.federation}`;

async function finished(page) {
  await page.waitForSelector('body[data-state="done"]', { timeout: 15000 });
  return (await page.textContent("#verdict")).trim();
}

async function checks(page) {
  return page.$$eval("#checks li", (lis) => lis.map((li) => ({ ok: li.dataset.ok, text: li.textContent.trim() })));
}

async function outcomes(page) {
  return page.$$eval("#operators li", (lis) => lis.map((li) => li.dataset.outcome));
}

// Rewrites an operator's history answer: the first Mint's owner is swapped for another key, as a
// lying operator (or a man in the middle) would do to claim the item.
function tamper(body) {
  const forged = body.replace(/("owner"\s*:\s*")([0-9a-f]{66})(")/, (_m, a, key, c) =>
    a + (key.startsWith("02") ? "03" : "02") + key.slice(2) + c);
  assert.notEqual(forged, body, "the fixture has an owner to tamper with");
  return forged;
}

async function routeHistory(page, urls, id) {
  for (const u of urls) {
    await page.route(`${u}/v1/items/${id}/history`, async (route) => {
      const response = await route.fetch();
      await route.fulfill({ response, body: tamper(await response.text()) });
    });
  }
}

for (const size of ["phone", "desktop"]) {
  await step("authentic", size, async (page) => {
    await page.goto(scanUrl(cfg.authentic.id));
    assert.equal(await finished(page), "AUTHENTIC");
    assert.match(await page.textContent("#owner"), new RegExp(cfg.authentic.owner.slice(0, 8)));
    assert.match(await page.textContent("#product"), new RegExp(cfg.authentic.product));
    assert.match(await page.textContent("#manufacturer"), /Acme Watches/);
    assert.equal((await page.$$("#timeline li")).length, 2, "mint and transfer on the timeline");
    const cs = await checks(page);
    assert.ok(cs.length >= 4, "the page lists its checks");
    assert.ok(cs.every((c) => c.ok === "true"), `every check passed: ${JSON.stringify(cs)}`);
    assert.deepEqual(await outcomes(page), ["valid", "valid", "valid", "valid"]);
    // Phone-sized: nothing wider than the screen.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `no horizontal overflow (${overflow}px)`);
  });
}

await step("unknown", "phone", async (page) => {
  const id = "ab".repeat(32);
  await page.goto(scanUrl(id));
  assert.equal(await finished(page), "UNKNOWN");
});

await step("locked-in-escrow", "desktop", async (page) => {
  await page.goto(scanUrl(cfg.locked.id));
  assert.equal(await finished(page), "LOCKED IN ESCROW");
});

await step("tampered-everywhere", "desktop", async (page) => {
  await routeHistory(page, cfg.operators, cfg.authentic.id);
  await page.goto(scanUrl(cfg.authentic.id));
  assert.equal(await finished(page), "COUNTERFEIT");
  assert.deepEqual(await outcomes(page), ["invalid", "invalid", "invalid", "invalid"]);
  assert.ok((await checks(page)).some((c) => c.ok === "false"), "a failed check is shown");
});

await step("one-liar", "desktop", async (page) => {
  await routeHistory(page, [cfg.operators[1]], cfg.authentic.id);
  await page.goto(scanUrl(cfg.authentic.id));
  assert.equal(await finished(page), "AUTHENTIC");
  assert.deepEqual(await outcomes(page), ["valid", "invalid", "valid", "valid"]);
});

await step("pasted-uri", "phone", async (page) => {
  await page.goto(`${cfg.base}/scan/`);
  await page.fill("#item-input", `hallmark:${cfg.authentic.id}@${cfg.federation}`);
  await page.click("#scan-button");
  assert.equal(await finished(page), "AUTHENTIC");
});

await step("uploaded-label", "phone", async (page) => {
  await page.goto(`${cfg.base}/scan/`);
  await page.setInputFiles("#qr-file", cfg.label_png);
  assert.equal(await finished(page), "AUTHENTIC");
  assert.match(await page.textContent("#owner"), new RegExp(cfg.authentic.owner.slice(0, 8)));
});

await browser.close();
console.log(failures ? `${failures} step(s) failed` : "all steps passed");
process.exit(failures ? 1 : 0);
