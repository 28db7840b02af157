import { mkdir, writeFile } from "node:fs/promises";
import { basename, dirname } from "node:path";
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
  /** What the table should say besides the figures (e.g. a success count), optional. */
  note?: string;
}

/** What every bench writes to bench/results/<bench>.json. */
export interface BenchResult {
  /** The bench's name: the results file's base name (core, streaming, ...). */
  bench: string;
  date: string;
  rows: Row[];
  /** Bench-specific extras (failures with their messages, per-run counts), optional. */
  details?: unknown;
}

/** ours.median / baseline.median: the ratio every table shows (read with the unit: ms lower is better, MB/s higher). */
export function ratio(r: Row): number {
  return r.ours.median / r.baseline.median;
}

/**
 * The markdown table of rows, one line each; with `withBench`, a first column names each row's
 * bench; a last column holds the notes when any row has one.
 */
export function rowsTable(rows: (Row & { bench?: string })[], withBench = false): string[] {
  const notes = rows.some((r) => r.note);
  const lines = [
    `| ${withBench ? "bench | " : ""}case | ours min / median / p95 | baseline min / median / p95 | median ratio | baseline |${notes ? " notes |" : ""}`,
    `| ${withBench ? "--- | " : ""}--- | --- | --- | --- | --- |${notes ? " --- |" : ""}`,
  ];
  for (const r of rows) {
    const o = r.ours;
    const b = r.baseline;
    lines.push(
      `| ${withBench ? `${r.bench ?? ""} | ` : ""}${r.case} | ${fmt(o.min)} / ${fmt(o.median)} / ${fmt(o.p95)} ${r.unit} | ${fmt(b.min)} / ${fmt(b.median)} / ${fmt(b.p95)} ${r.unit} | ${fmt(ratio(r), 2)}x | ${r.baselineName} |${notes ? ` ${r.note ?? ""} |` : ""}`,
    );
  }
  return lines;
}

/** Write the rows (and details) as JSON to `out`, named after its base name, and print their table. */
export async function report(out: string, rows: Row[], details?: unknown): Promise<void> {
  await mkdir(dirname(out), { recursive: true });
  const result: BenchResult = { bench: basename(out).replace(/\.json$/, ""), date: new Date().toISOString(), rows, ...(details === undefined ? {} : { details }) };
  await writeFile(out, JSON.stringify(result, null, 2));
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
  for (const line of rowsTable(rows)) console.log(line);
}
