import type { SandboxClient } from "@sandbar/sdk";

/**
 * `sandbar sandbox shell NAME`: an interactive terminal in the sandbox. Keys go to a pty
 * in the sandbox as typed (raw mode), window size follows ours, output goes straight out.
 */
export async function shell(client: SandboxClient, name: string, shellPath = "/bin/bash"): Promise<number> {
  const sb = await client.getSandbox(name);
  const stdin = process.stdin;
  const cols = process.stdout.columns ?? 80;
  const rows = process.stdout.rows ?? 24;
  const command = `if [ -x ${shellPath} ]; then exec ${shellPath} -l; else exec /bin/sh -l; fi`;
  const handle = await sb.run(command, { wait: false, pty: true, timeout: 0, idleTimeout: 60, killOnDisconnect: true, cols, rows });
  const onData = (b: Buffer): void => handle.sendInput(b.toString("utf8"));
  const onResize = (): void => handle.resize(process.stdout.columns ?? 80, process.stdout.rows ?? 24);
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.on("data", onData);
  process.stdout.on("resize", onResize);
  try {
    for await (const chunk of handle) process.stdout.write(chunk.data);
    return (await handle.result).exit_code;
  } finally {
    stdin.off("data", onData);
    process.stdout.off("resize", onResize);
    if (stdin.isTTY) stdin.setRawMode(false);
    stdin.pause();
  }
}
