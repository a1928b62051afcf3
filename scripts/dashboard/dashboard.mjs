// Drives the dashboard of a running lb in headless Chromium: the page must render every backend from
// /stats, the drain button must disable a backend (checked both on the page and through /stats), the
// capacity field must change a capacity, the charts must open full from the server's history, and a
// screenshot is saved.
//
// Usage: node dashboard.mjs http://127.0.0.1:9090/ <screenshot.png> <expected backend count>
import { chromium } from "playwright-core";

const [admin, screenshot, expected] = process.argv.slice(2);
const expectedBackends = Number(expected);

function check(condition, message) {
  if (!condition) {
    console.error("FAIL: " + message);
    process.exitCode = 1;
    throw new Error(message);
  }
  console.log("ok: " + message);
}

async function stats() {
  const response = await fetch(new URL("/stats", admin));
  return response.json();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  // The server's history has a few seconds in it before the page opens: the charts must show them at once.
  let seconds = 0;
  for (let i = 0; i < 100 && seconds < 2; i++) {
    seconds = (await stats()).history.length;
    if (seconds < 2) await new Promise((r) => setTimeout(r, 100));
  }
  check(seconds >= 2, "the server keeps a history: " + seconds + " seconds");
  await page.goto(admin);
  await page.waitForFunction((n) => document.querySelectorAll("#backends tr").length === n, expectedBackends, { timeout: 10000 });
  const rows = await page.$$eval("#backends tr", (trs) => trs.map((tr) => ({
    url: tr.dataset.url,
    state: tr.querySelector(".state").textContent,
    button: tr.querySelector("button.toggle").textContent,
  })));
  const fromApi = (await stats()).backends.map((b) => b.url);
  check(JSON.stringify(rows.map((r) => r.url)) === JSON.stringify(fromApi), "the page lists every backend from /stats: " + fromApi.join(", "));
  check(rows.every((r) => r.state === "up" && r.button === "drain"), "every backend shows up, with a drain button: " + JSON.stringify(rows));
  check(await page.$("#chart") !== null, "the requests-per-second chart is on the page");
  await page.waitForFunction(() => Number(document.getElementById("chart").dataset.points) >= 2, null, { timeout: 10000 });
  check(Number(await page.getAttribute("#chart", "data-points")) >= 2 && Number(await page.getAttribute("#latency", "data-points")) >= 2,
    "both charts are drawn from the server's history as soon as the page opens");
  check((await page.$$("#events li")).length >= 1, "the health transitions list is on the page");
  const headers = await page.$$eval("thead th", (ths) => ths.map((th) => th.textContent));
  check(headers.includes("p50") && headers.includes("p99"), "p50 and p99 columns: " + headers.join(", "));
  const latency = (await stats()).backends.map((b) => b.latency_ms);
  const cells = await page.$$eval("#backends tr", (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent)));
  check(latency.some((l) => l.p50 !== null) && cells.some((row) => row.filter((t) => /^\d+(\.\d+)? ms$/.test(t)).length >= 3),
    "percentiles from /stats are shown: " + JSON.stringify(latency) + " " + JSON.stringify(cells));

  // Drain the first backend with its button.
  await page.click("#backends tr:first-child button.toggle");
  await page.waitForFunction(() => document.querySelector("#backends tr:first-child .state").textContent === "drained", null, { timeout: 10000 });
  check((await stats()).backends[0].enabled === false, "the drain button disabled backend 0 (confirmed by /stats)");
  check(await page.textContent("#backends tr:first-child button.toggle") === "enable", "the button now offers enable");

  // Change the second backend's capacity.
  await page.fill("#backends tr:nth-child(2) input[type=number]", "7");
  await page.click("#backends tr:nth-child(2) button.set-capacity");
  await page.waitForFunction(() => document.querySelector("#backends tr:nth-child(2) input").value === "7" && document.activeElement.tagName !== "INPUT", null, { timeout: 10000 });
  let capacity = 0;
  for (let i = 0; i < 50 && capacity !== 7; i++) {
    capacity = (await stats()).backends[1].capacity;
    if (capacity !== 7) await new Promise((r) => setTimeout(r, 100));
  }
  check(capacity === 7, "the capacity field set backend 1's capacity to 7");

  // Enable it again so the screenshot shows a lively page.
  await page.click("#backends tr:first-child button.toggle");
  await page.waitForFunction(() => document.querySelector("#backends tr:first-child .state").textContent === "up", null, { timeout: 10000 });
  check((await stats()).backends[0].enabled === true, "enable brings backend 0 back");
  await page.waitForTimeout(2500);
  await page.screenshot({ path: screenshot, fullPage: true });
  check(errors.length === 0, "no script errors on the page" + (errors.length ? ": " + errors.join("; ") : ""));
  console.log("screenshot saved to " + screenshot);
} finally {
  await browser.close();
}
