/**
 * Dockerfile parsing and build planning for sandbar builds.
 *
 * `parseDockerfile` turns a Dockerfile into a {@link BuildPlan}: stages with fully resolved steps that an
 * executor can run one by one in a sandbox. Splitting the file into instructions (continuation lines,
 * comments, the `# escape=` directive, heredoc bodies) is done by `dockerfile-ast`; the words of each
 * instruction are then read the way BuildKit's Dockerfile frontend reads them (flag extraction, JSON
 * exec form, `name=value` words, and its shell-word lexer for variable substitution), because the
 * library's own value helpers drop quoting information that substitution needs.
 *
 * What is resolved here: ARG/ENV scoping and substitution, WORKDIR, USER, SHELL, multi-stage references,
 * the target stage and which stages it needs. What is left to the executor: running RUN commands (their
 * `$VAR`s are expanded by the shell, with `env` from the step), hashing COPY/ADD sources, and the base
 * image's own config (see {@link ParseOptions.imageConfig}).
 */
import { createHash } from "node:crypto";
import { posix } from "node:path";
import { DockerfileParser } from "dockerfile-ast";

/** A Dockerfile sandbar cannot build. `line` is 1-based; 0 when the problem is not about one line. */
export class DockerfileError extends Error {
  constructor(
    readonly line: number,
    /** The message without the `line N: ` prefix. */
    readonly detail: string,
    /** The instruction keyword (upper case) the error is about, when there is one. */
    readonly instruction: string | null = null,
  ) {
    super(line > 0 ? `line ${line}: ${detail}` : detail);
    this.name = "DockerfileError";
  }
}

/** What the executor knows about an external base image; all optional. */
export interface BaseImageConfig {
  /** The image's environment (e.g. PATH), visible to `$VAR` substitution and included in RUN env. */
  env?: Record<string, string>;
  /** The image's WorkingDir; relative WORKDIRs resolve against it. Default "/". */
  workdir?: string;
  /** The image's User; default null (the image default, i.e. root). */
  user?: string;
  /** The image's Shell; default ["/bin/sh", "-c"]. */
  shell?: string[];
}

export interface ParseOptions {
  /** `--build-arg` values; they override ARG defaults of declared ARGs. */
  buildArgs?: Record<string, string>;
  /** Name of the stage to output (case-insensitive); default the last stage. */
  target?: string;
  /**
   * Looks up an external base image's config by its reference (the substituted FROM, e.g. "python:3.12").
   * Without it, variables the base image defines (typically `$PATH` in `ENV PATH=/venv/bin:$PATH`) are
   * unset during substitution and RUN `env` holds only what the Dockerfile sets. FROM lines depend only on
   * global ARGs, so an executor can parse once to learn the images, fetch their configs, and parse again.
   */
  imageConfig?: (image: string) => BaseImageConfig | undefined;
}

interface StepBase {
  /** 1-based line of the instruction's first line. */
  line: number;
  /** The instruction as written, continuation lines joined (for build logs). */
  text: string;
}

export interface RunStep extends StepBase {
  kind: "RUN";
  /** Shell form: the command string, unsubstituted (the shell expands it). Exec form: argv joined by spaces. */
  command: string;
  /** Exec form (JSON array) only: the argv to run as is, without a shell. */
  argv?: string[];
  /** The SHELL in effect; a shell-form command runs as [...shell, command]. */
  shell: string[];
  /** ARGs declared in the stage (with a value) overlaid by ENV so far, ENV winning, as Docker does. */
  env: Record<string, string>;
  /** Absolute working directory in effect. */
  workdir: string;
  /** USER in effect; null = not set (the base image's user, root by default). */
  user: string | null;
}

interface CopyFields extends StepBase {
  /** Source paths/patterns relative to the build context (or to the `from` stage/image), substituted. */
  sources: string[];
  /** Destination as written after substitution; relative to `workdir` when not absolute; a trailing "/" matters. */
  dest: string;
  /** `--from` value after substitution (stage name, stage index or image reference); null = build context. */
  from: string | null;
  /** The stage index `from` refers to; null when it is the build context or an external image. */
  fromStage: number | null;
  chown: string | null;
  chmod: string | null;
  /** Absolute working directory in effect (for a relative `dest`). */
  workdir: string;
}

export interface CopyStep extends CopyFields {
  kind: "COPY";
}

/** ADD of local sources only (no URLs, no archive auto-extraction); otherwise like COPY without --from. */
export interface AddStep extends CopyFields {
  kind: "ADD";
  from: null;
  fromStage: null;
}

export interface EnvStep extends StepBase {
  kind: "ENV";
  /** Substituted name/value pairs, in order. */
  pairs: [string, string][];
}

export interface ArgStep extends StepBase {
  kind: "ARG";
  name: string;
  /** The default after substitution; null when the ARG has none. */
  default: string | null;
  /** The value in effect: build arg, else default, else the global ARG's value; null = unset. */
  value: string | null;
}

export interface WorkdirStep extends StepBase {
  kind: "WORKDIR";
  /** Absolute, normalised path (relative WORKDIRs resolved against the previous one). */
  path: string;
}

export interface UserStep extends StepBase {
  kind: "USER";
  user: string;
}

interface CommandFields extends StepBase {
  /** Exec form as given; shell form becomes [...shell in effect, string] (["/bin/sh", "-c", s] by default). */
  argv: string[];
}

export interface CmdStep extends CommandFields {
  kind: "CMD";
}

export interface EntrypointStep extends CommandFields {
  kind: "ENTRYPOINT";
}

/** `{ kind: "ENTRYPOINT" | "CMD"; argv }`, split so that `Extract<Step, { kind: "CMD" }>` works. */
export type CommandStep = CmdStep | EntrypointStep;

export interface LabelStep extends StepBase {
  kind: "LABEL";
  pairs: [string, string][];
}

export interface ExposeStep extends StepBase {
  kind: "EXPOSE";
  /** e.g. "8000", "53/udp", "8000-8010/tcp". Recorded only. */
  ports: string[];
}

export interface ShellStep extends StepBase {
  kind: "SHELL";
  argv: string[];
}

export type Step = RunStep | CopyStep | AddStep | EnvStep | ArgStep | WorkdirStep | UserStep | CommandStep | LabelStep | ExposeStep | ShellStep;

/** The image config a stage ends with (inherited by stages built FROM it). */
export interface StageConfig {
  /** Base image env (when known) plus ENV set in this stage or the stages it is built from. */
  env: Record<string, string>;
  workdir: string;
  user: string | null;
  shell: string[];
  /** null = inherit the base image's. */
  cmd: string[] | null;
  /** null = inherit the base image's. */
  entrypoint: string[] | null;
  labels: Record<string, string>;
  exposedPorts: string[];
}

export interface Stage {
  index: number;
  /** `AS` name, lower-cased as Docker does; null when unnamed. */
  name: string | null;
  /** The FROM image after substitution of global ARGs, e.g. "python:3.12", or an earlier stage's name. */
  from: string;
  /** Index of the earlier stage FROM names; null for an external image. */
  fromStage: number | null;
  /** `FROM --platform=` after substitution; null when not given. */
  platform: string | null;
  /** 1-based line of the FROM instruction. */
  line: number;
  /** False when neither the target nor any stage it needs (via FROM or COPY --from, transitively) uses it. */
  needed: boolean;
  steps: Step[];
  config: StageConfig;
}

export interface BuildPlan {
  stages: Stage[];
  /** Index of the stage to output. */
  target: number;
  /** Build args that no ARG in the Dockerfile declares (Docker warns about these). */
  unusedBuildArgs: string[];
}

export const DEFAULT_SHELL: readonly string[] = ["/bin/sh", "-c"];

const STAGE_NAME = /^[a-z][a-z0-9\-_.]*$/;
const UNSUPPORTED_INSTRUCTIONS = new Set(["ONBUILD", "HEALTHCHECK", "STOPSIGNAL", "VOLUME"]);
const KNOWN_INSTRUCTIONS = new Set([
  "ADD",
  "ARG",
  "CMD",
  "COPY",
  "ENTRYPOINT",
  "ENV",
  "EXPOSE",
  "FROM",
  "HEALTHCHECK",
  "LABEL",
  "MAINTAINER",
  "ONBUILD",
  "RUN",
  "SHELL",
  "STOPSIGNAL",
  "USER",
  "VOLUME",
  "WORKDIR",
]);
/** Flags Docker knows but sandbar does not build, per instruction. */
const UNSUPPORTED_FLAGS: Record<string, readonly string[]> = {
  RUN: ["mount", "network", "security", "device"],
  COPY: ["link", "parents", "exclude"],
  ADD: ["link", "exclude", "checksum", "keep-git-dir", "unpack"],
};
const SUPPORTED_FLAGS: Record<string, readonly string[]> = {
  FROM: ["platform"],
  COPY: ["from", "chown", "chmod"],
  ADD: ["chown", "chmod"],
};
const URL_SOURCE = /^(?:[a-z][a-z0-9+.-]*:\/\/|git@[^:/]+:)/i;
const ARCHIVE_SOURCE = /\.(?:tar|tgz|taz|tbz|tbz2|tb2|txz|tlz|tzst|tar\.(?:gz|z|bz2|xz|lz|lzma|zst|lz4))$/i;
const PORT = /^\d{1,5}(?:-\d{1,5})?(?:\/(?:tcp|udp|sctp))?$/i;

// ---------------------------------------------------------------------------------------------------------
// Splitting the file into instructions

interface RawInstruction {
  /** 1-based. */
  line: number;
  /** Upper case. */
  keyword: string;
  /** Everything after the keyword, continuation lines joined, trimmed. */
  args: string;
  /** The instruction as written, continuation lines joined. */
  text: string;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/**
 * Splits normalised Dockerfile text into instructions. Instruction boundaries come from dockerfile-ast;
 * each instruction's lines are joined the way Docker's parser joins them (escape+newline removed, comment
 * and blank lines inside a continuation dropped). Where dockerfile-ast swallows lines as a heredoc body
 * that BuildKit would not (e.g. `<<` inside an exec-form JSON string), those `<<` are masked and the text
 * is parsed again, so line numbers and contents stay those of the original text.
 */
function splitInstructions(src: string): { escape: string; instructions: RawInstruction[] } {
  const lines = src.split("\n");
  const work = lines.slice();
  for (;;) {
    let parsed;
    try {
      parsed = DockerfileParser.parse(work.join("\n"));
    } catch (err) {
      throw new DockerfileError(0, `could not parse the Dockerfile: ${err instanceof Error ? err.message : String(err)}`);
    }
    const escape = parsed.getEscapeCharacter();
    const continuation = new RegExp(`${escapeRegExp(escape)}[ \\t]*$`);
    const instructions: RawInstruction[] = [];
    let masked = false;
    for (const ins of parsed.getInstructions()) {
      const range = ins.getRange();
      const start = range.start.line;
      const end = Math.min(range.end.line, lines.length - 1);
      let joined = "";
      let last = start;
      for (let i = start; i <= end; i++) {
        const l = i === start ? (lines[i] ?? "").slice(range.start.character) : (lines[i] ?? "");
        if (i > start && (/^\s*#/.test(l) || l.trim() === "")) continue;
        last = i;
        if (continuation.test(l)) {
          joined += l.replace(continuation, "");
          continue;
        }
        joined += l;
        break;
      }
      const m = /^(\S+)([\s\S]*)$/.exec(joined.trim());
      const keywordAsWritten = m?.[1] ?? "";
      const raw: RawInstruction = { line: start + 1, keyword: keywordAsWritten.toUpperCase(), args: (m?.[2] ?? "").trim(), text: joined.trim() };
      const swallowed = lines.slice(last + 1, end + 1).some((l) => l.trim() !== "" && !/^\s*#/.test(l));
      if (swallowed && !hasHeredoc(raw, escape)) {
        // dockerfile-ast took the following lines for a heredoc body; BuildKit would not.
        let changed = false;
        for (let i = start; i <= last; i++) {
          const l = work[i] ?? "";
          if (l.includes("<<")) {
            work[i] = l.replaceAll("<<", "__");
            changed = true;
          }
        }
        if (!changed) throw new DockerfileError(raw.line, `could not parse the ${raw.keyword} instruction`, raw.keyword);
        masked = true;
        break;
      }
      instructions.push(raw);
    }
    if (!masked) return { escape, instructions };
  }
}

/** Whether a RUN/COPY/ADD uses a heredoc, read as BuildKit does (a shell-form word starting with `<<`). */
function hasHeredoc(ins: RawInstruction, escape: string): boolean {
  if (ins.keyword !== "RUN" && ins.keyword !== "COPY" && ins.keyword !== "ADD") return false;
  const { rest } = extractFlags(ins.args);
  if (parseJsonArray(rest) !== null) return false;
  return parseWords(rest, escape).some((w) => /^\d*<<-?(?:[^<]|$)/.test(w));
}

// ---------------------------------------------------------------------------------------------------------
// Words, flags, JSON (after BuildKit's frontend/dockerfile/parser)

/** Leading `--flag[=value]` words; the rest of the line after them. */
function extractFlags(line: string): { flags: string[]; rest: string } {
  const flags: string[] = [];
  let pos = 0;
  for (;;) {
    while (pos < line.length && /\s/.test(line[pos]!)) pos++;
    if (!line.startsWith("--", pos)) return { flags, rest: line.slice(pos) };
    let word = "";
    let quote: string | null = null;
    let blankOK = false;
    for (; pos < line.length; pos++) {
      let ch = line[pos]!;
      if (quote === null) {
        if (/\s/.test(ch)) break;
        if (ch === "'" || ch === '"') {
          quote = ch;
          blankOK = true;
          continue;
        }
      } else if (ch === quote) {
        quote = null;
        continue;
      }
      if (ch === "\\") {
        if (pos + 1 === line.length) continue;
        ch = line[++pos]!;
      }
      word += ch;
    }
    if (word === "--") {
      while (pos < line.length && /\s/.test(line[pos]!)) pos++;
      return { flags, rest: line.slice(pos) };
    }
    if (blankOK || word.length > 0) flags.push(word);
  }
}

/** Splits on unquoted whitespace, keeping quotes and escapes in the words (Docker's parseWords). */
function parseWords(rest: string, escape: string): string[] {
  const chars = Array.from(rest);
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quote: string | null = null;
  let blankOK = false;
  for (let i = 0; i < chars.length; i++) {
    let ch = chars[i]!;
    if (!inWord) {
      if (/\s/.test(ch)) continue;
      inWord = true;
    }
    if (quote === null) {
      if (/\s/.test(ch)) {
        if (blankOK || word.length > 0) words.push(word);
        word = "";
        blankOK = false;
        inWord = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
      }
      if (ch === escape) {
        if (i + 1 === chars.length) continue;
        word += ch;
        ch = chars[++i]!;
      }
      word += ch;
      continue;
    }
    if (ch === quote) quote = null;
    if (ch === escape && quote !== "'") {
      if (i + 1 === chars.length) continue;
      word += ch;
      ch = chars[++i]!;
    }
    word += ch;
  }
  if (inWord && (blankOK || word.length > 0)) words.push(word);
  return words;
}

/** Docker's exec form: a JSON array of strings; anything else is shell form. */
function parseJsonArray(rest: string): string[] | null {
  const t = rest.trim();
  if (!t.startsWith("[")) return null;
  let value: unknown;
  try {
    value = JSON.parse(t);
  } catch {
    return null;
  }
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) return null;
  return value as string[];
}

/** `name=value ...` words, or the legacy `name value with spaces` form (ENV, LABEL). Raw, unexpanded. */
function parseNameVal(ins: RawInstruction, escape: string): [string, string][] {
  const words = parseWords(ins.args, escape);
  if (words.length === 0) throw new DockerfileError(ins.line, `${ins.keyword} requires at least one argument`, ins.keyword);
  if (!words[0]!.includes("=")) {
    const m = /^(\S+)\s+([\s\S]*)$/.exec(ins.args);
    if (!m) throw new DockerfileError(ins.line, `${ins.keyword} must have two arguments (${ins.keyword} name=value)`, ins.keyword);
    return [[m[1]!, m[2]!]];
  }
  return words.map((w) => {
    const eq = w.indexOf("=");
    if (eq < 0) throw new DockerfileError(ins.line, `${ins.keyword}: can't find = in ${JSON.stringify(w)}; the form is name=value`, ins.keyword);
    return [w.slice(0, eq), w.slice(eq + 1)];
  });
}

// ---------------------------------------------------------------------------------------------------------
// Variable substitution (after BuildKit's frontend/dockerfile/shell lexer, ProcessWord)

class SubstitutionError extends Error {}

type Lookup = (name: string) => string | undefined;

/** Expands one word: quotes removed, escapes applied, `$VAR`/`${VAR}`/`${VAR:-w}`/`${VAR:+w}`/`${VAR:?m}` substituted. */
function expandWord(word: string, lookup: Lookup, escape = "\\"): string {
  const chars = Array.from(word);
  let i = 0;
  const isNameChar = (c: string) => /^[\p{L}\p{N}_]$/u.test(c);
  const isDigit = (c: string) => /^\p{Nd}$/u.test(c);

  const name = (): string => {
    let out = "";
    while (i < chars.length) {
      const ch = chars[i]!;
      if (out === "" && isDigit(ch)) {
        while (i < chars.length && isDigit(chars[i]!)) out += chars[i++];
        return out;
      }
      if (out === "" && "@*#?-$!0".includes(ch)) {
        i++;
        return ch;
      }
      if (!isNameChar(ch)) break;
      out += ch;
      i++;
    }
    return out;
  };

  const singleQuote = (): string => {
    i++;
    let out = "";
    for (;;) {
      if (i >= chars.length) throw new SubstitutionError("unexpected end of statement while looking for matching single-quote");
      const ch = chars[i++]!;
      if (ch === "'") return out;
      out += ch;
    }
  };

  const doubleQuote = (): string => {
    i++;
    let out = "";
    for (;;) {
      if (i >= chars.length) throw new SubstitutionError("unexpected end of statement while looking for matching double-quote");
      const c = chars[i]!;
      if (c === '"') {
        i++;
        return out;
      }
      if (c === "$") {
        out += dollar();
        continue;
      }
      i++;
      let ch = c;
      if (ch === escape) {
        const n = chars[i];
        if (n === undefined) continue;
        if (n === '"' || n === "$" || n === escape) {
          ch = n;
          i++;
        }
      }
      out += ch;
    }
  };

  const dollar = (): string => {
    i++;
    if (chars[i] !== "{") {
      const n = name();
      if (n === "") return "$";
      return lookup(n) ?? "";
    }
    i++;
    const first = chars[i];
    if (first === undefined) throw new SubstitutionError("syntax error: missing '}'");
    if (first === "{" || first === "}" || first === ":") throw new SubstitutionError("syntax error: bad substitution");
    const n = name();
    const ch = chars[i++];
    if (ch === undefined) throw new SubstitutionError("syntax error: missing '}'");
    if (ch === "}") return lookup(n) ?? "";
    let modifier = ch;
    const nullIsUnset = ch === ":";
    if (nullIsUnset) modifier = chars[i++] ?? "";
    if (modifier !== "-" && modifier !== "+" && modifier !== "?") {
      throw new SubstitutionError(`unsupported modifier (${nullIsUnset ? ":" : ""}${modifier}) in substitution \${${n}...}`);
    }
    const alt = stopOn("}");
    const value = lookup(n);
    const set = value !== undefined && !(nullIsUnset && value === "");
    switch (modifier) {
      case "-":
        return set ? value! : alt;
      case "+":
        return set ? alt : "";
      default:
        if (!set) throw new SubstitutionError(`${n}: ${alt || (value === undefined ? "is not allowed to be unset" : "is not allowed to be empty")}`);
        return value!;
    }
  };

  const stopOn = (stop: string | null): string => {
    let out = "";
    while (i < chars.length) {
      const ch = chars[i]!;
      if (stop !== null && ch === stop) {
        i++;
        return out;
      }
      if (ch === "'") out += singleQuote();
      else if (ch === '"') out += doubleQuote();
      else if (ch === "$") out += dollar();
      else {
        i++;
        if (ch === escape) {
          if (i >= chars.length) break;
          out += chars[i++];
        } else out += ch;
      }
    }
    if (stop !== null) throw new SubstitutionError(`unexpected end of statement while looking for matching ${stop}`);
    return out;
  };

  return stopOn(null);
}

// ---------------------------------------------------------------------------------------------------------
// Planning

interface StageState {
  env: Map<string, string>;
  args: Map<string, string | null>;
  workdir: string;
  user: string | null;
  shell: string[];
  cmd: string[] | null;
  entrypoint: string[] | null;
  cmdSet: boolean;
  labels: Map<string, string>;
  exposed: string[];
}

function unsupported(ins: RawInstruction, what: string, hint = ""): DockerfileError {
  return new DockerfileError(ins.line, `${what} is not supported by sandbar builds${hint}`, ins.keyword);
}

/** Parses the flags of an instruction, rejecting unknown and unsupported ones; returns name -> value. */
function parseFlags(ins: RawInstruction): { flags: Map<string, string>; rest: string } {
  const { flags: words, rest } = extractFlags(ins.args);
  const flags = new Map<string, string>();
  for (const w of words) {
    const body = w.slice(2);
    const eq = body.indexOf("=");
    const name = (eq < 0 ? body : body.slice(0, eq)).toLowerCase();
    const value = eq < 0 ? null : body.slice(eq + 1);
    if (UNSUPPORTED_FLAGS[ins.keyword]?.includes(name)) throw unsupported(ins, `${ins.keyword} --${name}`);
    if (!SUPPORTED_FLAGS[ins.keyword]?.includes(name)) throw new DockerfileError(ins.line, `${ins.keyword}: unknown flag --${name}`, ins.keyword);
    if (flags.has(name)) throw new DockerfileError(ins.line, `${ins.keyword}: duplicate flag --${name}`, ins.keyword);
    if (value === null || value === "") throw new DockerfileError(ins.line, `${ins.keyword}: flag --${name} needs a value (--${name}=...)`, ins.keyword);
    flags.set(name, value);
  }
  return { flags, rest: rest.trim() };
}

function checkKeyword(ins: RawInstruction, escape: string): void {
  if (ins.keyword === "" || !KNOWN_INSTRUCTIONS.has(ins.keyword)) {
    throw new DockerfileError(ins.line, `unknown instruction: ${ins.text.split(/\s/, 1)[0] ?? ""}`, ins.keyword || null);
  }
  if (UNSUPPORTED_INSTRUCTIONS.has(ins.keyword)) throw unsupported(ins, ins.keyword);
  if (hasHeredoc(ins, escape)) throw unsupported(ins, `${ins.keyword} with a heredoc (<<)`);
}

/**
 * Parses a Dockerfile into a build plan. Throws {@link DockerfileError} for syntax problems, unsupported
 * instructions or flags, heredocs, ADD of URLs or archives, an empty file, no FROM, or an unknown target.
 */
export function parseDockerfile(text: string, opts: ParseOptions = {}): BuildPlan {
  const src = text.replace(/^\uFEFF/, "").replace(/\r\n?/g, "\n");
  const { escape, instructions } = splitInstructions(src);
  if (instructions.length === 0) throw new DockerfileError(0, "the Dockerfile is empty: a build needs at least a FROM instruction");

  const buildArgs = new Map(Object.entries(opts.buildArgs ?? {}));
  const declared = new Set<string>();

  const wrap = <T>(ins: RawInstruction, fn: () => T): T => {
    try {
      return fn();
    } catch (err) {
      if (err instanceof SubstitutionError) throw new DockerfileError(ins.line, `${ins.keyword}: ${err.message}`, ins.keyword);
      throw err;
    }
  };

  // Global ARGs: before the first FROM, usable in FROM lines only.
  const globals = new Map<string, string | null>();
  const globalLookup: Lookup = (n) => globals.get(n) ?? undefined;
  let pos = 0;
  for (; pos < instructions.length; pos++) {
    const ins = instructions[pos]!;
    checkKeyword(ins, escape);
    if (ins.keyword === "FROM") break;
    if (ins.keyword !== "ARG") {
      throw new DockerfileError(ins.line, `${ins.keyword} before the first FROM: only ARG may come before FROM`, ins.keyword);
    }
    parseFlags(ins);
    for (const [name, def] of parseArgDecls(ins, escape)) {
      declared.add(name);
      const value = buildArgs.has(name) ? buildArgs.get(name)! : def === null ? null : wrap(ins, () => expandWord(def, globalLookup, escape));
      globals.set(name, value);
    }
  }
  if (pos === instructions.length) {
    throw new DockerfileError(0, "the Dockerfile has no FROM instruction: a build stage must start with FROM");
  }

  const stages: Stage[] = [];
  const stageByName = new Map<string, number>();
  let stage: Stage | null = null;
  let st: StageState | null = null;

  const finishStage = () => {
    if (stage && st) stage.config = snapshotConfig(st);
  };

  for (; pos < instructions.length; pos++) {
    const ins = instructions[pos]!;
    checkKeyword(ins, escape);
    if (ins.keyword === "FROM") {
      finishStage();
      const { flags, rest } = parseFlags(ins);
      const words = rest.split(/\s+/).filter((w) => w !== "");
      let name: string | null = null;
      if (words.length === 3 && words[1]!.toLowerCase() === "as") {
        name = words[2]!.toLowerCase();
        if (!STAGE_NAME.test(name)) {
          throw new DockerfileError(
            ins.line,
            `FROM: invalid stage name ${JSON.stringify(words[2])}: use letters, digits, "-", "_" and ".", starting with a letter`,
            "FROM",
          );
        }
        if (stageByName.has(name)) throw new DockerfileError(ins.line, `FROM: duplicate stage name ${JSON.stringify(name)}`, "FROM");
      } else if (words.length !== 1) {
        throw new DockerfileError(ins.line, "FROM requires either one or three arguments: FROM <image> [AS <name>]", "FROM");
      }
      const from = wrap(ins, () => expandWord(words[0]!, globalLookup, escape));
      if (from.trim() === "") throw new DockerfileError(ins.line, `FROM: base name (${words[0]}) should not be blank`, "FROM");
      const platformFlag = flags.get("platform");
      const platform = platformFlag === undefined ? null : wrap(ins, () => expandWord(platformFlag, globalLookup, escape));
      const fromStage = stageByName.get(from.toLowerCase()) ?? null;
      const index = stages.length;
      st = fromStage !== null ? inheritState(stages[fromStage]!.config) : baseState(opts.imageConfig?.(from));
      stage = { index, name, from, fromStage, platform, line: ins.line, needed: false, steps: [], config: snapshotConfig(st) };
      stages.push(stage);
      if (name !== null) stageByName.set(name, index);
      continue;
    }
    const s = st!;
    const cur = stage!;
    const lookup: Lookup = (n) => (s.env.has(n) ? s.env.get(n) : (s.args.get(n) ?? undefined));
    const expand = (w: string) => wrap(ins, () => expandWord(w, lookup, escape));
    const base = { line: ins.line, text: ins.text };

    switch (ins.keyword) {
      case "RUN": {
        const { rest } = parseFlags(ins);
        if (rest === "") throw new DockerfileError(ins.line, "RUN requires at least one argument", "RUN");
        const argv = parseJsonArray(rest);
        if (argv !== null && argv.length === 0) throw new DockerfileError(ins.line, "RUN requires at least one argument", "RUN");
        const env = new Map<string, string>();
        for (const [k, v] of s.args) if (v !== null) env.set(k, v);
        for (const [k, v] of s.env) env.set(k, v);
        const step: RunStep = {
          kind: "RUN",
          command: argv ? argv.join(" ") : rest,
          ...(argv ? { argv } : {}),
          shell: [...s.shell],
          env: Object.fromEntries(env),
          workdir: s.workdir,
          user: s.user,
          ...base,
        };
        cur.steps.push(step);
        break;
      }
      case "COPY":
      case "ADD": {
        const { flags, rest } = parseFlags(ins);
        const items = parseJsonArray(rest) ?? rest.split(/\s+/).filter((w) => w !== "");
        if (items.length < 2)
          throw new DockerfileError(ins.line, `${ins.keyword} requires at least two arguments: ${ins.keyword} <src>... <dest>`, ins.keyword);
        const expanded = items.map(expand);
        const sources = expanded.slice(0, -1);
        const dest = expanded[expanded.length - 1]!;
        if (dest === "" || sources.some((p) => p === "")) {
          throw new DockerfileError(ins.line, `${ins.keyword}: a source or destination is empty after variable substitution`, ins.keyword);
        }
        if (sources.length > 1 && !dest.endsWith("/")) {
          throw new DockerfileError(ins.line, `${ins.keyword} with more than one source needs a destination directory ending in "/"`, ins.keyword);
        }
        for (const src of sources) {
          if (URL_SOURCE.test(src)) {
            if (ins.keyword === "COPY") throw new DockerfileError(ins.line, `COPY: source can't be a URL (${src})`, "COPY");
            throw unsupported(ins, `ADD from a URL (${src})`, "; download it in a RUN step instead");
          }
          if (ins.keyword === "ADD" && ARCHIVE_SOURCE.test(src)) {
            throw unsupported(ins, `ADD of an archive (${src}), which Docker would auto-extract,`, "; COPY it and extract it in a RUN step instead");
          }
        }
        const chownFlag = flags.get("chown");
        const chmodFlag = flags.get("chmod");
        const chown = chownFlag === undefined ? null : expand(chownFlag);
        const chmod = chmodFlag === undefined ? null : expand(chmodFlag);
        const fields = { sources, dest, chown, chmod, workdir: s.workdir, ...base };
        if (ins.keyword === "ADD") {
          cur.steps.push({ kind: "ADD", ...fields, from: null, fromStage: null });
          break;
        }
        const fromFlag = flags.get("from");
        const from = fromFlag === undefined ? null : expand(fromFlag);
        let fromStage: number | null = null;
        if (from !== null) {
          if (from === "") throw new DockerfileError(ins.line, `COPY: --from=${fromFlag} is empty after variable substitution`, "COPY");
          if (/^\d+$/.test(from)) {
            fromStage = Number(from);
            if (fromStage >= cur.index) {
              throw new DockerfileError(ins.line, `COPY --from=${from}: refers to the current or a later stage (stages are numbered from 0)`, "COPY");
            }
          } else {
            const lower = from.toLowerCase();
            fromStage = stageByName.get(lower) ?? null;
            if (fromStage === null && (cur.name === lower || remainingStageNames(instructions, pos).has(lower))) {
              throw new DockerfileError(
                ins.line,
                `COPY --from=${from}: refers to the current or a later stage; only earlier stages can be copied from`,
                "COPY",
              );
            }
          }
        }
        cur.steps.push({ kind: "COPY", ...fields, from, fromStage });
        break;
      }
      case "ENV": {
        parseFlags(ins);
        const pairs = parseNameVal(ins, escape).map(([k, v]): [string, string] => [expand(k), expand(v)]);
        for (const [k] of pairs) if (k === "") throw new DockerfileError(ins.line, "ENV names can not be blank", "ENV");
        for (const [k, v] of pairs) s.env.set(k, v);
        cur.steps.push({ kind: "ENV", pairs, ...base });
        break;
      }
      case "ARG": {
        parseFlags(ins);
        for (const [name, raw] of parseArgDecls(ins, escape)) {
          declared.add(name);
          const def = raw === null ? null : expand(raw);
          const value = buildArgs.has(name) ? buildArgs.get(name)! : def !== null ? def : (globals.get(name) ?? null);
          s.args.set(name, value);
          cur.steps.push({ kind: "ARG", name, default: def, value, ...base });
        }
        break;
      }
      case "WORKDIR": {
        const { rest } = parseFlags(ins);
        if (rest === "") throw new DockerfileError(ins.line, "WORKDIR requires exactly one argument", "WORKDIR");
        const p = expand(rest);
        if (p === "") throw new DockerfileError(ins.line, `WORKDIR: ${rest} is empty after variable substitution`, "WORKDIR");
        s.workdir = posix.resolve(s.workdir, p);
        cur.steps.push({ kind: "WORKDIR", path: s.workdir, ...base });
        break;
      }
      case "USER": {
        const { rest } = parseFlags(ins);
        if (rest === "") throw new DockerfileError(ins.line, "USER requires exactly one argument", "USER");
        const user = expand(rest);
        if (user === "") throw new DockerfileError(ins.line, `USER: ${rest} is empty after variable substitution`, "USER");
        s.user = user;
        cur.steps.push({ kind: "USER", user, ...base });
        break;
      }
      case "CMD":
      case "ENTRYPOINT": {
        const { rest } = parseFlags(ins);
        const json = parseJsonArray(rest);
        if (json === null && rest === "") throw new DockerfileError(ins.line, `${ins.keyword} requires at least one argument`, ins.keyword);
        const argv = json ?? [...s.shell, rest];
        if (ins.keyword === "CMD") {
          s.cmd = argv;
          s.cmdSet = true;
        } else {
          s.entrypoint = argv;
          if (!s.cmdSet) s.cmd = null;
        }
        cur.steps.push({ kind: ins.keyword, argv, ...base });
        break;
      }
      case "LABEL": {
        parseFlags(ins);
        const pairs = parseNameVal(ins, escape).map(([k, v]): [string, string] => [expand(k), expand(v)]);
        for (const [k] of pairs) if (k === "") throw new DockerfileError(ins.line, "LABEL names can not be blank", "LABEL");
        for (const [k, v] of pairs) s.labels.set(k, v);
        cur.steps.push({ kind: "LABEL", pairs, ...base });
        break;
      }
      case "MAINTAINER": {
        const { rest } = parseFlags(ins);
        if (rest === "") throw new DockerfileError(ins.line, "MAINTAINER requires exactly one argument", "MAINTAINER");
        s.labels.set("maintainer", rest);
        cur.steps.push({ kind: "LABEL", pairs: [["maintainer", rest]], ...base });
        break;
      }
      case "EXPOSE": {
        const { rest } = parseFlags(ins);
        const ports = rest
          .split(/\s+/)
          .filter((w) => w !== "")
          .flatMap((w) => expand(w).split(/\s+/))
          .filter((p) => p !== "");
        if (ports.length === 0) throw new DockerfileError(ins.line, "EXPOSE requires at least one argument", "EXPOSE");
        for (const p of ports) {
          if (!PORT.test(p)) throw new DockerfileError(ins.line, `EXPOSE: invalid port ${JSON.stringify(p)} (expected e.g. 8000, 8000/tcp, 53/udp)`, "EXPOSE");
        }
        for (const p of ports) if (!s.exposed.includes(p)) s.exposed.push(p);
        cur.steps.push({ kind: "EXPOSE", ports, ...base });
        break;
      }
      case "SHELL": {
        const { rest } = parseFlags(ins);
        const argv = parseJsonArray(rest);
        if (argv === null || argv.length === 0) {
          throw new DockerfileError(ins.line, 'SHELL requires a non-empty JSON array, e.g. SHELL ["/bin/bash", "-c"]', "SHELL");
        }
        s.shell = argv;
        cur.steps.push({ kind: "SHELL", argv, ...base });
        break;
      }
      default:
        // checkKeyword rejected everything else; FROM is handled above.
        throw new DockerfileError(ins.line, `unknown instruction: ${ins.keyword}`, ins.keyword);
    }
  }
  finishStage();

  let target = stages.length - 1;
  if (opts.target !== undefined) {
    const idx = stageByName.get(opts.target.toLowerCase());
    if (idx === undefined) {
      const names = stages.flatMap((s) => (s.name === null ? [] : [s.name]));
      throw new DockerfileError(0, `target stage ${JSON.stringify(opts.target)} not found; named stages: ${names.length > 0 ? names.join(", ") : "(none)"}`);
    }
    target = idx;
  }
  const todo = [target];
  while (todo.length > 0) {
    const stg = stages[todo.pop()!]!;
    if (stg.needed) continue;
    stg.needed = true;
    if (stg.fromStage !== null) todo.push(stg.fromStage);
    for (const step of stg.steps) if (step.kind === "COPY" && step.fromStage !== null) todo.push(step.fromStage);
  }

  const unusedBuildArgs = [...buildArgs.keys()].filter((k) => !declared.has(k));
  return { stages, target, unusedBuildArgs };
}

function parseArgDecls(ins: RawInstruction, escape: string): [string, string | null][] {
  const words = parseWords(ins.args, escape);
  if (words.length === 0) throw new DockerfileError(ins.line, "ARG requires at least one argument", "ARG");
  return words.map((w) => {
    const eq = w.indexOf("=");
    const name = eq < 0 ? w : w.slice(0, eq);
    if (name === "") throw new DockerfileError(ins.line, `ARG: missing name in ${JSON.stringify(w)}`, "ARG");
    return [name, eq < 0 ? null : w.slice(eq + 1)];
  });
}

/** Lower-cased `AS` names of the FROM instructions after position `pos`. */
function remainingStageNames(instructions: RawInstruction[], pos: number): Set<string> {
  const names = new Set<string>();
  for (const ins of instructions.slice(pos + 1)) {
    if (ins.keyword !== "FROM") continue;
    const words = extractFlags(ins.args).rest.trim().split(/\s+/);
    if (words.length === 3 && words[1]!.toLowerCase() === "as") names.add(words[2]!.toLowerCase());
  }
  return names;
}

function baseState(cfg: BaseImageConfig | undefined): StageState {
  return {
    env: new Map(Object.entries(cfg?.env ?? {})),
    args: new Map(),
    workdir: cfg?.workdir ? posix.resolve("/", cfg.workdir) : "/",
    user: cfg?.user ? cfg.user : null,
    shell: cfg?.shell && cfg.shell.length > 0 ? [...cfg.shell] : [...DEFAULT_SHELL],
    cmd: null,
    entrypoint: null,
    cmdSet: false,
    labels: new Map(),
    exposed: [],
  };
}

function inheritState(c: StageConfig): StageState {
  return {
    env: new Map(Object.entries(c.env)),
    args: new Map(),
    workdir: c.workdir,
    user: c.user,
    shell: [...c.shell],
    cmd: c.cmd && [...c.cmd],
    entrypoint: c.entrypoint && [...c.entrypoint],
    cmdSet: false,
    labels: new Map(Object.entries(c.labels)),
    exposed: [...c.exposedPorts],
  };
}

function snapshotConfig(s: StageState): StageConfig {
  return {
    env: Object.fromEntries(s.env),
    workdir: s.workdir,
    user: s.user,
    shell: [...s.shell],
    cmd: s.cmd && [...s.cmd],
    entrypoint: s.entrypoint && [...s.entrypoint],
    labels: Object.fromEntries(s.labels),
    exposedPorts: [...s.exposed],
  };
}

// ---------------------------------------------------------------------------------------------------------
// Cache keys

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v ?? null)).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

/**
 * The cache key of `step` applied on top of the state keyed `parentKey`: sha256 (hex) over the parent
 * key, a canonical JSON of the step's semantic fields (everything but `line` and `text`, object keys
 * sorted) and `extra` (the executor passes a content hash of COPY/ADD sources).
 */
export function stepCacheKey(parentKey: string, step: Step, extra?: string): string {
  const { line: _line, text: _text, ...semantic } = step;
  return createHash("sha256")
    .update(canonicalJson(["sandbar-step-v1", parentKey, semantic, extra ?? null]))
    .digest("hex");
}
