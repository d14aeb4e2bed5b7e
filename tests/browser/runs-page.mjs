// Opens the runs page of a `host serve` in headless Chromium (Debian's
// /usr/bin/chromium, driven by playwright-core), checks that a compensated
// run shows the right bars, a call's input and error, that rerun opens a
// linked run, and a schedule's next tick; and saves a screenshot.
//
//   node runs-page.mjs BASE_URL RUN_ID SCREENSHOT.png
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { chromium } from "playwright-core";

const [base, run, screenshot] = process.argv.slice(2);
if (!base || !run || !screenshot) {
  console.error("usage: node runs-page.mjs BASE_URL RUN_ID SCREENSHOT.png");
  process.exit(2);
}
const fail = (message) => {
  console.error("FAIL: " + message);
  process.exitCode = 1;
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  await page.goto(base + "/");
  await page.waitForSelector(`[data-testid=run-row][data-run="${run}"]`, { timeout: 10000 });
  const listed = await page.$eval(`[data-testid=run-row][data-run="${run}"] [data-testid=status]`, (e) => e.textContent);
  if (listed !== "reverted") fail(`the list shows ${listed}, not reverted`);
  console.log("list: the run is listed as " + listed);

  await page.click(`[data-testid=run-row][data-run="${run}"]`);
  await page.waitForSelector("[data-testid=timeline] [data-testid=bar]", { timeout: 10000 });
  const bars = await page.$$eval("[data-testid=bar]", (elements) => elements.map((e) => ({
    action: e.dataset.action, step: e.dataset.step, outcome: e.dataset.outcome, attempt: Number(e.dataset.attempt),
    left: parseFloat(e.style.left), color: getComputedStyle(e).backgroundColor,
  })));
  for (const bar of bars) console.log(`bar: ${bar.action} ${bar.step} #${bar.attempt} ${bar.outcome} at ${bar.left.toFixed(1)}% ${bar.color}`);
  const expected = ["invoke reserve 1 ok", "invoke charge 1 error", "invoke charge 2 error", "compensate charge 1 ok", "compensate reserve 1 ok"];
  const got = bars.map((b) => `${b.action} ${b.step} ${b.attempt} ${b.outcome}`);
  if (JSON.stringify(got) !== JSON.stringify(expected)) fail(`bars ${JSON.stringify(got)}, expected ${JSON.stringify(expected)}`);
  const invokeColor = bars.find((b) => b.action === "invoke")?.color;
  const compensateColor = bars.find((b) => b.action === "compensate")?.color;
  if (!invokeColor || invokeColor === compensateColor) fail("compensations are not drawn in their own colour");
  for (let i = 1; i < bars.length; i++) {
    if (bars[i].left + 0.01 < bars[i - 1].left) fail(`bar ${i} starts before bar ${i - 1} on the time axis`);
  }
  const error = await page.$eval("[data-testid=run-error]", (e) => e.textContent);
  if (!error.includes("card declined")) fail(`the run's error is not shown: ${error}`);
  const detailStatus = await page.$eval("[data-testid=run-detail]", (e) => e.dataset.status);
  if (detailStatus !== "reverted") fail(`the detail shows ${detailStatus}`);
  // A failed call's error and a call's input, folded under the bar.
  const callErrors = await page.$$eval("[data-testid=call-error]", (elements) => elements.map((e) => e.textContent));
  if (!callErrors.some((text) => text.includes("card declined"))) fail(`no call shows its error: ${JSON.stringify(callErrors)}`);
  if ((await page.$$("[data-testid=call-input]")).length === 0) fail("no call shows its input");
  const outputs = await page.$$eval("[data-testid=call-output]", (elements) => elements.map((e) => e.textContent));
  if (!outputs.some((text) => text.includes("reserved"))) fail(`no call shows its output: ${JSON.stringify(outputs)}`);
  // A reverted run offers rerun (and not retry, which is for failed runs).
  if (await page.$("[data-testid=retry]")) fail("a reverted run offers retry");
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("screenshot: " + screenshot);

  // Rerun from the page: the new run opens, linked to this one.
  await page.click("[data-testid=rerun]");
  await page.waitForFunction((original) => {
    const links = document.querySelector("[data-testid=run-links]");
    return location.hash.startsWith("#run/") && !location.hash.includes(original) && links && links.textContent.includes(original);
  }, run, { timeout: 10000 });
  const rerun = decodeURIComponent(await page.evaluate(() => location.hash.slice("#run/".length)));
  console.log(`rerun: ${rerun} says it is a rerun of ${run}`);
  // The original now lists it.
  await page.goto(base + "/#run/" + encodeURIComponent(run));
  await page.waitForFunction((id) => document.querySelector("[data-testid=run-links]")?.textContent.includes(id), rerun, { timeout: 10000 });
  console.log("the original lists its rerun");

  // The list shows each schedule's next tick.
  await page.goto(base + "/");
  await page.waitForSelector("[data-testid=schedule][data-workflow=nightly] [data-testid=next-tick]", { timeout: 10000 });
  const next = await page.$eval("[data-testid=schedule][data-workflow=nightly] [data-testid=next-tick]", (e) => e.textContent);
  if (!next || next === "none") fail(`the schedule shows no next tick: ${next}`);
  console.log("schedule: nightly's next tick is " + next);
} finally {
  await browser.close();
}
