/// <reference types="node" />
/**
 * Dockerfile build contexts from a directory (Node only): walk it, leave out what its
 * `.dockerignore` excludes, and write a ustar archive with the shared writer (../tar.ts).
 * Loaded by `SandboxClient.createSnapshotFromDockerfile` with a dynamic import, so the SDK's
 * root entry stays free of Node built-ins.
 *
 * Regular files keep their permission bits and mtime (seconds), directories too; symlinks are
 * stored as links (never followed); sockets, FIFOs and devices are skipped. Owners are 0:0.
 * Each directory's entries are sorted by name, so the same tree gives the same archive.
 */
import { lstat, readdir, readFile, readlink } from "node:fs/promises";
import { join } from "node:path";
import { DockerIgnore } from "../dockerignore.js";
import { tarChunks, type TarEntry } from "../tar.js";

/** The entries of directory `root` that `.dockerignore` (at its root) keeps, parents first. */
export async function contextEntries(root: string): Promise<TarEntry[]> {
  const rootStat = await lstat(root).catch((e: NodeJS.ErrnoException) => {
    throw new Error(`build context ${root}: ${e.code === "ENOENT" ? "no such directory" : e.message}`);
  });
  if (!rootStat.isDirectory()) throw new Error(`build context ${root} is not a directory`);
  let ignoreText = "";
  try {
    ignoreText = await readFile(join(root, ".dockerignore"), "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  const ignore = new DockerIgnore(ignoreText);
  const entries: TarEntry[] = [];
  /** Directories excluded themselves but walked for `!` patterns: added once something under them is kept. */
  const pendingDirs = new Map<string, TarEntry>();
  const emitted = new Set<string>();

  const emitParents = (rel: string): void => {
    const parts = rel.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const pending = pendingDirs.get(dir);
      if (pending && !emitted.has(dir)) {
        entries.push(pending);
        emitted.add(dir);
      }
    }
  };

  const walk = async (dirRel: string): Promise<void> => {
    const names = (await readdir(dirRel === "" ? root : join(root, dirRel))).sort();
    for (const name of names) {
      const rel = dirRel === "" ? name : `${dirRel}/${name}`;
      const abs = join(root, rel);
      const st = await lstat(abs);
      const excluded = ignore.excludes(rel);
      const mode = st.mode & 0o7777;
      const mtime = Math.floor(st.mtimeMs / 1000);
      if (st.isDirectory()) {
        const entry: TarEntry = { type: "directory", path: rel, mode, mtime };
        if (!excluded) {
          emitParents(rel);
          entries.push(entry);
          emitted.add(rel);
          await walk(rel);
        } else if (ignore.mayIncludeBelow(rel)) {
          pendingDirs.set(rel, entry);
          await walk(rel);
        }
        continue;
      }
      if (excluded) continue;
      if (st.isFile()) {
        emitParents(rel);
        entries.push({ type: "file", path: rel, mode, mtime, data: await readFile(abs) });
      } else if (st.isSymbolicLink()) {
        emitParents(rel);
        entries.push({ type: "symlink", path: rel, mode, mtime, target: await readlink(abs) });
      }
    }
  };
  await walk("");
  return entries;
}

/** A ustar archive (as chunks, for a Blob) of directory `root`, honouring its `.dockerignore`. */
export async function tarDirectory(root: string): Promise<Uint8Array[]> {
  return tarChunks(await contextEntries(root));
}
