import { readFile, writeFile } from "node:fs/promises";
import { shell } from "./shell.js";
import type { EgressMode, NetworkPolicyOptions } from "@sandbar/sdk";
import { boolFlag, client, CliError, flag, flagList, need, printJson, printTable, type Args } from "../../context.js";

const EGRESS_MODES: readonly EgressMode[] = ["deny_all", "allow_all", "allow_list"];

/**
 * `--egress MODE --allow-cidr CIDR... --allow-domain NAME...` as a network policy, or undefined
 * when none of them is given. Allow lists without `--egress` mean `allow_list`; the server
 * checks the rest (deny_all takes no lists, allow_all no domains, the CIDR and name syntax).
 */
export function networkPolicyFromFlags(args: Args): NetworkPolicyOptions | undefined {
  const egress = flag(args, "egress");
  const cidrs = flagList(args, "allow-cidr");
  const domains = flagList(args, "allow-domain");
  if (egress === undefined && cidrs.length === 0 && domains.length === 0) return undefined;
  const mode = egress ?? "allow_list";
  if (!(EGRESS_MODES as readonly string[]).includes(mode)) throw new CliError(`--egress must be one of ${EGRESS_MODES.join(", ")}, not '${mode}'`);
  return { egress: mode as EgressMode, ...(cidrs.length > 0 ? { allowCidrs: cidrs } : {}), ...(domains.length > 0 ? { allowDomains: domains } : {}) };
}

/** `sandbar sandbox create|ls|get|rm|exec|shell|cp|stop|start|snapshot` */
export async function sandbox(args: Args): Promise<number> {
  const c = client(args);
  const verb = need(args, 0, "sandbox verb (create, ls, get, rm, exec, shell, cp, stop, start, snapshot)");
  switch (verb) {
    case "create": {
      const snap = flag(args, "snapshot");
      if (!snap) throw new CliError("--snapshot ID_OR_NAME is required");
      const isId = /^[0-9a-f-]{36}$/.test(snap);
      const sb = await c.createSandbox({
        ...(isId ? { snapshotId: snap } : { snapshotName: snap }),
        name: flag(args, "name"),
        vcpus: flag(args, "vcpus") ? Number(flag(args, "vcpus")) : undefined,
        memBytes: flag(args, "mem-bytes") ? Number(flag(args, "mem-bytes")) : undefined,
        fsCapacityBytes: flag(args, "fs-capacity") ? Number(flag(args, "fs-capacity")) : undefined,
        networkPolicy: networkPolicyFromFlags(args),
        // Only what was asked is sent: the server's defaults (resume a memory snapshot, a stop keeps files only) stay.
        restoreMemory: boolFlag(args, "no-restore-memory") ? false : undefined,
        preserveMemoryOnStop: boolFlag(args, "preserve-memory") ? true : undefined,
      });
      printJson(sb.info);
      return 0;
    }
    case "snapshot": {
      const box = need(args, 1, "sandbox name");
      const name = need(args, 2, "snapshot name: sandbar sandbox snapshot SANDBOX SNAPSHOT_NAME [--memory]");
      const cap = flag(args, "fs-capacity");
      const snap = await c.captureSnapshot(box, name, {
        includeMemory: boolFlag(args, "memory") ? true : undefined,
        fsCapacityBytes: cap ? Number(cap) : undefined,
        timeout: Number(flag(args, "timeout") ?? 600),
      });
      printJson(snap);
      return 0;
    }
    case "ls":
      printTable((await c.listSandboxes()).map((s) => s.info) as unknown as Record<string, unknown>[], ["id", "name", "status", "snapshot_id", "created_at"]);
      return 0;
    case "get":
      printJson((await c.getSandbox(need(args, 1, "sandbox name"))).info);
      return 0;
    case "rm":
      await c.deleteSandbox(need(args, 1, "sandbox name"));
      return 0;
    case "stop":
      await c.stopSandbox(need(args, 1, "sandbox name"));
      return 0;
    case "start":
      await c.startSandbox(need(args, 1, "sandbox name"));
      return 0;
    case "exec": {
      const sb = await c.getSandbox(need(args, 1, "sandbox name"));
      const command = args.positionals.slice(2).join(" ");
      if (!command) throw new CliError("missing command: sandbar sandbox exec NAME -- COMMAND");
      // Output streams as it comes; the command's exit code becomes ours.
      const r = await sb.run(command, {
        timeout: Number(flag(args, "timeout") ?? 0),
        cwd: flag(args, "cwd"),
        onStdout: (d) => process.stdout.write(d),
        onStderr: (d) => process.stderr.write(d),
      });
      return r.exit_code;
    }
    case "shell":
      return shell(c, need(args, 1, "sandbox name"), flag(args, "shell"));
    case "cp": {
      const src = need(args, 1, "source");
      const dst = need(args, 2, "destination");
      const remote = (s: string): { box: string; path: string } | undefined => {
        const m = /^([a-z0-9-]+):(\/.*)$/.exec(s);
        return m ? { box: m[1] as string, path: m[2] as string } : undefined;
      };
      const rs = remote(src);
      const rd = remote(dst);
      if (rs && !rd) {
        const sb = await c.getSandbox(rs.box);
        await writeFile(dst, await sb.read(rs.path));
      } else if (rd && !rs) {
        const sb = await c.getSandbox(rd.box);
        await sb.write(rd.path, await readFile(src));
      } else {
        throw new CliError("cp needs exactly one side as SANDBOX:/path");
      }
      return 0;
    }
    default:
      throw new CliError(`unknown sandbox verb ${verb}`);
  }
}
