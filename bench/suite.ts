/**
 * The whole benchmark suite in one command (bench/run-all.sh calls this):
 *
 *   npx tsx bench/suite.ts [--quick] [--only core,pool,...] [--no-docs]
 *
 * Runs every bench one after another, each as its own process with the repetition counts of
 * PLAN (chosen so that the suite takes under 15 minutes on a 2-vCPU machine), and prints each
 * bench's wall time. Each bench writes bench/results/<bench>.json; the suite then writes
 * bench/results/summary.json (every row of every bench, with its bench, ratio and the machine)
 * and bench/results/summary.md (the machine, the wall times and one table of every row), and
 * splices summary.md into docs/benchmarks.md between `<!-- bench:summary:start -->` and
 * `<!-- bench:summary:end -->` when the full suite ran and every bench succeeded.
 *
 * --quick: tiny counts, results under bench/results/quick/, docs untouched (a smoke test).
 * --only:  a subset of the benches; the docs are left as they are.
 * A bench that fails does not stop the suite: its rows are missing from the summary, which
 * lists it as failed, and the suite exits 1.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs, promisify } from "node:util";
import { fmt, ratio, rowsTable, type BenchResult, type Row } from "./stats.js";

const run = promisify(execFile);
const DOCS = "docs/benchmarks.md";
const START = "<!-- bench:summary:start -->";
const END = "<!-- bench:summary:end -->";

interface Step {
  bench: string;
  /** Arguments of the full run and of --quick. */
  args: string[];
  quick: string[];
}

/**
 * Every bench and its repetition counts. Wall times of the full run on the machine described in
 * docs/benchmarks.md are in its generated summary.
 */
const PLAN: Step[] = [
  { bench: "core", args: ["--creates", "15", "--execs", "100"], quick: ["--creates", "2", "--execs", "10"] },
  { bench: "streaming", args: ["--execs", "100", "--mib", "64", "--reps", "5"], quick: ["--execs", "5", "--mib", "8", "--reps", "1"] },
  { bench: "lifecycle", args: ["--runs", "2"], quick: ["--runs", "1", "--sizes", "1,10"] },
  {
    bench: "network",
    args: ["--mib", "256", "--reps", "3", "--wrk-seconds", "3", "--wrk-runs", "3"],
    quick: ["--mib", "16", "--reps", "1", "--wrk-seconds", "1", "--wrk-runs", "1"],
  },
  { bench: "memory", args: ["--sizes", "64,256,1024", "--reps", "2"], quick: ["--sizes", "64", "--reps", "1"] },
  { bench: "build", args: ["--reps", "2"], quick: ["--reps", "1"] },
  { bench: "pool", args: ["--size", "4", "--claims", "15", "--colds", "8"], quick: ["--size", "2", "--claims", "2", "--colds", "2"] },
  { bench: "burst", args: ["--burst", "50", "--sequential", "3"], quick: ["--burst", "5", "--sequential", "2"] },
  { bench: "density", args: ["--target", "100", "--batch", "10", "--raw", "20"], quick: ["--target", "6", "--batch", "3", "--raw", "5"] },
];

interface Ran {
  bench: string;
  args: string[];
  seconds: number;
  ok: boolean;
  /** Why there are no rows although it succeeded (e.g. the server has no pools). */
  skipped?: string;
}

let current: ChildProcess | undefined;
let stopping = false;

/** One bench as its own process (tsx loaded into node, no npx); resolves with its exit code. */
function runBench(file: string, args: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", file, ...args], { stdio: "inherit" });
    current = child;
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      current = undefined;
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

/** CPU, memory, OS, kernel, runsc, node and the code's commit, for the summary. */
async function machine(): Promise<Record<string, string>> {
  const cpuinfo = await readFile("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? cpus()[0]?.model ?? "unknown";
  const count = cpuinfo.split("\n").filter((l) => /^processor\s*:/.test(l)).length || cpus().length;
  const os = /^PRETTY_NAME="?([^"\n]+)"?$/m.exec(await readFile("/etc/os-release", "utf8").catch(() => ""))?.[1] ?? "unknown";
  const kernel = (await readFile("/proc/sys/kernel/osrelease", "utf8")).trim();
  const runsc =
    (await run("runsc", ["--version"]).then(
      (r) => r.stdout.split("\n")[0]?.trim() ?? "",
      () => "not found",
    )) || "unknown";
  // The code measured: the commit, and whether tracked files differ from it.
  const commit = await run("git", ["rev-parse", "--short", "HEAD"]).then(
    (r) => r.stdout.trim(),
    () => "unknown",
  );
  const dirty = await run("git", ["status", "--porcelain", "--untracked-files=no"]).then(
    (r) => (r.stdout.trim() ? " with uncommitted changes" : ""),
    () => "",
  );
  return {
    cpu: `${count} x ${model}`,
    memory: `${fmt(totalmem() / 1024 ** 3, 1)} GiB`,
    os,
    kernel,
    runsc: `${runsc} (--platform=ptrace)`,
    node: process.version,
    code: `commit ${commit}${dirty}`,
  };
}

function summaryMarkdown(
  date: string,
  totalSeconds: number,
  m: Record<string, string>,
  ran: Ran[],
  rows: (Row & { bench: string })[],
  prepSeconds: number,
): string {
  const outcome = (r: Ran): string => (r.ok ? (r.skipped ? ", skipped" : "") : ", FAILED");
  const lines = [
    `Generated by \`bench/run-all.sh\` on ${date.slice(0, 10)} (${date}), ${m.code}.`,
    "",
    `Machine: ${m.cpu}, ${m.memory}, ${m.os}, kernel ${m.kernel}; ${m.runsc}; Node.js ${m.node}.`,
    "",
    `Suite wall time: ${fmt(totalSeconds / 60, 1)} min (test images ${fmt(prepSeconds, 0)} s; per bench, with its arguments:`,
    ...ran
      .map((r) => `${r.bench} ${fmt(r.seconds, 0)} s (\`${r.args.filter((_, i, a) => a[i] !== "--out" && a[i - 1] !== "--out").join(" ")}\`${outcome(r)})`)
      .map((x, i, a) => `${x}${i === a.length - 1 ? ")." : ","}`),
    "",
  ];
  for (const r of ran.filter((x) => x.skipped)) lines.push(`- ${r.bench}: ${r.skipped}`, "");
  for (const r of ran.filter((x) => !x.ok)) lines.push(`- ${r.bench} failed: no rows from it below.`, "");
  lines.push(...rowsTable(rows, true));
  return lines.join("\n") + "\n";
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { quick: { type: "boolean", default: false }, only: { type: "string" }, "no-docs": { type: "boolean", default: false } },
  });
  const only = values.only?.split(",").map((s) => s.trim());
  const unknown = only?.filter((b) => !PLAN.some((p) => p.bench === b)) ?? [];
  if (unknown.length) throw new Error(`unknown bench(es) ${unknown.join(", ")}; known: ${PLAN.map((p) => p.bench).join(", ")}`);
  const plan = PLAN.filter((p) => !only || only.includes(p.bench));
  const outDir = values.quick ? "bench/results/quick" : "bench/results";
  await mkdir(outDir, { recursive: true });

  const forward = (sig: NodeJS.Signals): void => {
    // The bench cleans up on the signal (a terminal's Ctrl-C reaches it directly too); then stop.
    stopping = true;
    current?.kill(sig);
  };
  process.on("SIGINT", forward);
  process.on("SIGTERM", forward);

  const date = new Date().toISOString();
  const t0 = performance.now();
  const m = await machine();
  console.log(`[suite] ${m.cpu}, ${m.memory}, kernel ${m.kernel}, ${m.runsc}, node ${m.node}, ${m.code}`);
  // The test images the benches push (built once and cached; a fresh machine builds them here).
  const prepCode = await runBench("test/support/build-images-cli.ts", ["busybox", "python", "python-extra"]);
  const prepSeconds = (performance.now() - t0) / 1000;
  if (prepCode !== 0) throw new Error("building the test images failed");

  const ran: Ran[] = [];
  const rows: (Row & { bench: string; ratio: number })[] = [];
  for (const step of plan) {
    if (stopping) break;
    const args = [...(values.quick ? step.quick : step.args), "--out", join(outDir, `${step.bench}.json`)];
    console.log(`\n[suite] ${step.bench}: npx tsx bench/${step.bench}-bench.ts ${args.join(" ")}`);
    const s0 = performance.now();
    const code = await runBench(`bench/${step.bench}-bench.ts`, args);
    const seconds = (performance.now() - s0) / 1000;
    const r: Ran = { bench: step.bench, args, seconds, ok: code === 0 };
    if (r.ok) {
      const result = JSON.parse(await readFile(join(outDir, `${step.bench}.json`), "utf8")) as BenchResult;
      if (Date.parse(result.date) < Date.parse(date)) throw new Error(`${step.bench} exited 0 but its results are from ${result.date}`);
      const skipped = (result.details as { skipped?: unknown } | undefined)?.skipped;
      if (typeof skipped === "string") r.skipped = skipped;
      for (const row of result.rows) rows.push({ bench: step.bench, ...row, ratio: ratio(row) });
    }
    ran.push(r);
    console.log(
      `[suite] ${step.bench}: ${r.ok ? "done" : `FAILED (exit ${code})`} in ${fmt(seconds, 1)} s (suite so far ${fmt((performance.now() - t0) / 60000, 1)} min)`,
    );
  }
  const totalSeconds = (performance.now() - t0) / 1000;

  await writeFile(join(outDir, "summary.json"), JSON.stringify({ date, totalSeconds, prepSeconds, machine: m, benches: ran, rows }, null, 2));
  const md = summaryMarkdown(date, totalSeconds, m, ran, rows, prepSeconds);
  await writeFile(join(outDir, "summary.md"), md);
  console.log(`\n${md}`);
  console.log("[suite] per bench:");
  for (const r of ran) console.log(`[suite]   ${r.bench.padEnd(10)} ${fmt(r.seconds, 1).padStart(7)} s  ${r.ok ? (r.skipped ? "skipped" : "ok") : "FAILED"}`);
  console.log(`[suite] total ${fmt(totalSeconds, 1)} s (${fmt(totalSeconds / 60, 1)} min); ${join(outDir, "summary.json")}, ${join(outDir, "summary.md")}`);

  const complete = !values.quick && !only && !stopping && ran.length === PLAN.length && ran.every((r) => r.ok);
  if (complete && !values["no-docs"]) {
    const doc = await readFile(DOCS, "utf8");
    const a = doc.indexOf(START);
    const b = doc.indexOf(END);
    if (a < 0 || b < a) throw new Error(`${DOCS} has no ${START} ... ${END} section`);
    await writeFile(DOCS, `${doc.slice(0, a + START.length)}\n${md}${doc.slice(b)}`);
    console.log(`[suite] ${DOCS}: summary updated`);
  } else if (!values.quick && !values["no-docs"]) {
    console.log(`[suite] ${DOCS} left as it is (${only ? "--only" : "not every bench ran and succeeded"})`);
  }
  if (stopping) process.exitCode = 130;
  else if (!ran.every((r) => r.ok)) process.exitCode = 1;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
