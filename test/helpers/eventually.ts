/**
 * Polls until check() holds (a kernel change lands a few ms after its log line; a peer's ban a
 * few tens of ms after the decision); throws naming what did not happen. Returns the ms it took.
 */
export async function eventually(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000, everyMs = 20): Promise<number> {
  const t0 = performance.now();
  while (!(await check())) {
    if (performance.now() - t0 > timeoutMs) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
  return performance.now() - t0;
}
