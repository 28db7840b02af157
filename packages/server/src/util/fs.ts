import { stat } from "node:fs/promises";

/** Whether something exists at `path` (following symlinks). */
export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
