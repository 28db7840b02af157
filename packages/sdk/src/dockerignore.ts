/**
 * `.dockerignore` matching with Docker's rules (moby/patternmatcher), in plain JavaScript:
 *
 * - one pattern a line; blank lines and lines starting with `#` are skipped; surrounding
 *   whitespace is trimmed; a leading `/` (or `./`) means the same as none: patterns are
 *   relative to the context root, and `*.md` matches `README.md` but not `docs/x.md`;
 * - `*` is any run of characters but `/`, `?` one character but `/`, `[a-z]` a class,
 *   (`[^a-z]` negated), `**` any number of directories (also none: `**\/*.go` matches
 *   `main.go`), `\` escapes the next character;
 * - a pattern that matches a directory matches everything under it (`node_modules`,
 *   `build/`);
 * - `!pattern` re-includes what earlier patterns excluded; the last matching line wins.
 */

interface Pattern {
  /** The cleaned pattern text (no `!`, no leading or trailing slash). */
  text: string;
  negated: boolean;
  regex: RegExp;
  /** Per `/`-separated segment, a matcher, or "**" for a segment holding `**`. */
  segments: (RegExp | "**")[];
}

/** Escape regex metacharacters of one literal character. */
function lit(ch: string): string {
  return /[.+()|{}$^*?[\]\\/]/.test(ch) ? `\\${ch}` : ch;
}

/** A glob (no `**`) or a whole pattern to a regex source; `**` handled only when `deep`. */
function globSource(p: string, deep: boolean): string {
  let re = "";
  for (let i = 0; i < p.length; i++) {
    const ch = p[i] as string;
    if (ch === "*") {
      if (deep && p[i + 1] === "*") {
        i++;
        // "**/" is the same as "**"
        if (p[i + 1] === "/") i++;
        re += i + 1 >= p.length ? ".*" : "(?:.*/)?";
      } else {
        re += "[^/]*";
      }
    } else if (ch === "?") {
      re += "[^/]";
    } else if (ch === "\\") {
      i++;
      if (i < p.length) re += lit(p[i] as string);
    } else if (ch === "[") {
      const end = p.indexOf("]", i + 2);
      if (end < 0) {
        re += "\\[";
        continue;
      }
      let cls = p.slice(i + 1, end);
      const neg = cls.startsWith("^");
      if (neg) cls = cls.slice(1);
      cls = cls.replace(/[\\\]^]/g, (c) => `\\${c}`);
      re += neg ? `[^/${cls}]` : `[${cls}]`;
      i = end;
    } else {
      re += lit(ch);
    }
  }
  return re;
}

/** Clean a pattern like Go's filepath.Clean, relative to the root: no `.`, `//` or edge slashes. */
function cleanPattern(p: string): string {
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === ".." && out.length > 0 && out[out.length - 1] !== "..") out.pop();
    else if (part !== "..") out.push(part);
  }
  return out.join("/");
}

/** Patterns of a `.dockerignore` file's text, in order. */
export class DockerIgnore {
  private readonly patterns: Pattern[];

  constructor(text: string) {
    this.patterns = [];
    for (const raw of text.split(/\r?\n/)) {
      let line = raw.trim();
      if (line === "" || line.startsWith("#")) continue;
      const negated = line.startsWith("!");
      if (negated) line = line.slice(1).trim();
      const cleaned = cleanPattern(line);
      if (cleaned === "") continue;
      this.patterns.push({
        text: cleaned,
        negated,
        regex: new RegExp(`^${globSource(cleaned, true)}$`),
        segments: cleaned.split("/").map((s) => (s.includes("**") ? "**" : new RegExp(`^${globSource(s, false)}$`))),
      });
    }
  }

  /** Whether there are any patterns at all. */
  get empty(): boolean {
    return this.patterns.length === 0;
  }

  /**
   * Whether `path` (relative, `/`-separated) is excluded: the last pattern that matches it or
   * one of its parent directories decides.
   */
  excludes(path: string): boolean {
    const parts = path.split("/").filter((p) => p !== "" && p !== ".");
    const candidates = parts.map((_, i) => parts.slice(0, i + 1).join("/"));
    let excluded = false;
    for (const p of this.patterns) {
      // Only a pattern that would change the answer needs testing.
      if (p.negated !== excluded) continue;
      if (candidates.some((c) => p.regex.test(c))) excluded = !p.negated;
    }
    return excluded;
  }

  /**
   * Whether an excluded directory must still be walked: some `!` pattern could match a path
   * below it. When false, nothing under `dir` can be included.
   */
  mayIncludeBelow(dir: string): boolean {
    const parts = dir.split("/").filter((p) => p !== "" && p !== ".");
    return this.patterns.some((p) => {
      if (!p.negated) return false;
      for (let i = 0; ; i++) {
        const seg = p.segments[i];
        if (seg === undefined) return false; // the pattern ends at or above dir
        if (seg === "**") return true;
        if (i === parts.length) return true; // more segments below dir
        if (!seg.test(parts[i] as string)) return false;
      }
    });
  }
}
