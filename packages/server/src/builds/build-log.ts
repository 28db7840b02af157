import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { PassThrough, type Readable } from "node:stream";

/**
 * The log of one Dockerfile build: kept in memory while it runs (followers get each line as
 * it is written), then saved to `<data dir>/builds/<snapshot id>.log`.
 */
export class BuildLog {
  private readonly lines: string[] = [];
  private readonly followers = new Set<PassThrough>();
  private finished = false;

  constructor(private readonly file: string) {}

  write(text: string): void {
    for (const line of text.replace(/\r/g, "").split("\n")) {
      if (this.finished) return;
      this.lines.push(line);
      for (const f of this.followers) f.write(`${line}\n`);
    }
  }

  /** Everything so far. */
  text(): string {
    return this.lines.map((l) => `${l}\n`).join("");
  }

  /** The log so far, then each new line, ending when the build ends. */
  follow(): Readable {
    const out = new PassThrough();
    out.write(this.text());
    if (this.finished) out.end();
    else {
      this.followers.add(out);
      out.on("close", () => this.followers.delete(out));
    }
    return out;
  }

  async finish(): Promise<void> {
    this.finished = true;
    for (const f of this.followers) f.end();
    this.followers.clear();
    await mkdir(dirname(this.file), { recursive: true });
    await writeFile(this.file, this.text());
  }

  /** A finished build's saved log, if there is one. */
  static async read(file: string): Promise<string | undefined> {
    try {
      return await readFile(file, "utf8");
    } catch {
      return undefined;
    }
  }
}
