import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
/** Summary statistics for benchmark samples (milliseconds or any unit). */
export interface Summary {
  n: number;
  min: number;
  median: number;
  p95: number;
  max: number;
}

export function summarize(samples: number[]): Summary {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))] ?? NaN;
  return { n: s.length, min: s[0] ?? NaN, median: at(0.5), p95: at(0.95), max: s[s.length - 1] ?? NaN };
}

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : "n/a";
}

/** Time an async function in milliseconds. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** One benchmark row: our figure against a baseline measured in the same run. */
export interface Row {
  case: string;
  unit: string;
  ours: Summary;
  baseline: Summary;
  baselineName: string;
}

/** The markdown table docs/benchmarks.md quotes. */
/** Write the rows as JSON to `out` and print their table. */
export async function report(out: string, rows: Row[]): Promise<void> {
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, JSON.stringify({ date: new Date().toISOString(), rows }, null, 2));
  printRows(rows);
}

/** Run a benchmark's main, failing the process on error. */
export function runMain(main: () => Promise<void>): void {
  main().catch((e: unknown) => {
    console.error(e);
    process.exitCode = 1;
  });
}

export function printRows(rows: Row[]): void {
  console.log("| case | ours min / median / p95 | baseline min / median / p95 | median ratio | baseline |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const r of rows) {
    const o = r.ours;
    const b = r.baseline;
    console.log(`| ${r.case} | ${fmt(o.min)} / ${fmt(o.median)} / ${fmt(o.p95)} ${r.unit} | ${fmt(b.min)} / ${fmt(b.median)} / ${fmt(b.p95)} ${r.unit} | ${fmt(o.median / b.median, 2)}x | ${r.baselineName} |`);
  }
}
