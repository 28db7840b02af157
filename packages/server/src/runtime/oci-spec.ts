import { readFileSync } from "node:fs";
import type { ImageRunConfig } from "../store/records.js";

/** Inputs of one sandbox's OCI runtime spec. */
export interface SpecInput {
  runtime: "runsc" | "runc";
  rootfs: string;
  hostname: string;
  netnsPath: string;
  /** Host directory holding the agent binary, bind-mounted read-only at /.sandbar. */
  agentDir: string;
  agentToken: string;
  agentPort: number;
  image: ImageRunConfig;
  vcpus: number;
  memBytes: number;
  pidsLimit: number;
  /** cgroup path, under /sandbar, so limits are easy to find. */
  cgroupsPath: string;
  /** Host files bind-mounted over /etc/hostname and /etc/hosts. */
  hostnameFile: string;
  hostsFile: string;
  /** Host file bind-mounted over /etc/resolv.conf (the server's DNS proxy). */
  resolvFile: string;
}

export const AGENT_MOUNT = "/.sandbar";
export const AGENT_PATH = `${AGENT_MOUNT}/sandbar-agent`;
const NOFILE = nofileLimit();
const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Docker's default set less NET_RAW (no raw sockets) and MKNOD. */
const CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_FSETID",
  "CAP_FOWNER",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETFCAP",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_SYS_CHROOT",
  "CAP_KILL",
  "CAP_AUDIT_WRITE",
];

/** CLONE_NEWUSER: a new user namespace hands back capabilities the spec dropped. */
const CLONE_NEWUSER = 0x10000000;
const EPERM = 1;
const ENOSYS = 38;

/**
 * Syscalls refused on top of the dropped capabilities. The kernel keyring is not namespaced
 * (under runc a sandbox would share host root's keyring); a user namespace would give back
 * CAP_NET_RAW and others (under gVisor it reopens raw and packet sockets). clone3 answers
 * ENOSYS under runc because its flags cannot be inspected; libc then falls back to clone. Under runsc the
 * filter is applied by the Sentry (`--oci-seccomp`).
 */
export function seccompProfile(runtime: "runsc" | "runc"): Record<string, unknown> {
  const newUser = [{ index: 0, value: CLONE_NEWUSER, valueTwo: CLONE_NEWUSER, op: "SCMP_CMP_MASKED_EQ" }];
  return {
    defaultAction: "SCMP_ACT_ALLOW",
    architectures: runtime === "runc" ? ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] : ["SCMP_ARCH_X86_64"],
    syscalls: [
      { names: ["add_key", "keyctl", "request_key"], action: "SCMP_ACT_ERRNO", errnoRet: EPERM },
      { names: ["unshare", "clone"], action: "SCMP_ACT_ERRNO", errnoRet: EPERM, args: newUser },
      // gVisor does not take errnoRet here (a refused clone3 stops glibc's threads); it has no
      // clone3 of its own either, so libc already falls back to clone, which the rule above sees.
      ...(runtime === "runc" ? [{ names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: ENOSYS }] : []),
    ],
  };
}

/** The most open files a sandbox may have: 1M, or less where the host's hard limit is lower (runc fails above it). */
export function nofileLimit(): number {
  try {
    const m = /^Max open files\s+\S+\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m) return Math.min(1048576, Number(m[1]));
  } catch {
    // not Linux: keep the default
  }
  return 1048576;
}

/** OS threads the agent starts at once and keeps, under runc (`SANDBAR_AGENT_THREADS`). */
export const AGENT_THREADS_RUNC = 32;

/** Build config.json for a sandbox whose init is the agent. */
export function buildSpec(s: SpecInput): Record<string, unknown> {
  const env = s.image.env.some((e) => e.startsWith("PATH=")) ? [...s.image.env] : [DEFAULT_PATH, ...s.image.env];
  env.push(`SANDBAR_AGENT_TOKEN=${s.agentToken}`, `SANDBAR_AGENT_ADDR=0.0.0.0:${s.agentPort}`, `SANDBAR_AGENT_CWD=${s.image.workingDir || "/"}`);
  // Commands run as the image's USER, as Docker runs them (the agent itself stays root).
  if (s.image.user) env.push(`SANDBAR_AGENT_USER=${s.image.user}`);
  // runc's pids limit counts threads: the agent starts the ones it will need while there is
  // room (a fork bomb at the limit would otherwise leave its Go runtime without one).
  if (s.runtime === "runc") env.push(`SANDBAR_AGENT_THREADS=${AGENT_THREADS_RUNC}`);
  const period = 100_000;
  const mounts: Record<string, unknown>[] = [
    { destination: "/proc", type: "proc", source: "proc" },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
    { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
    { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "mode=1777"] },
    { destination: AGENT_MOUNT, type: "bind", source: s.agentDir, options: ["rbind", "ro", "nosuid", "nodev"] },
    { destination: "/etc/hostname", type: "bind", source: s.hostnameFile, options: ["rbind", "rw"] },
    { destination: "/etc/hosts", type: "bind", source: s.hostsFile, options: ["rbind", "rw"] },
    { destination: "/etc/resolv.conf", type: "bind", source: s.resolvFile, options: ["rbind", "rw"] },
  ];
  if (s.runtime === "runc") {
    mounts.push({ destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] });
  }
  return {
    ociVersion: "1.0.2",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [AGENT_PATH],
      env,
      cwd: "/",
      capabilities: { bounding: CAPABILITIES, effective: CAPABILITIES, permitted: CAPABILITIES },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: NOFILE, soft: NOFILE }],
      noNewPrivileges: true,
    },
    root: { path: s.rootfs, readonly: false },
    hostname: s.hostname,
    mounts,
    linux: {
      namespaces: [{ type: "pid" }, { type: "network", path: s.netnsPath }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
      resources: {
        memory: { limit: s.memBytes, swap: s.memBytes },
        cpu: { quota: Math.max(1000, Math.round(s.vcpus * period)), period },
        pids: { limit: s.pidsLimit },
      },
      cgroupsPath: s.cgroupsPath,
      seccomp: seccompProfile(s.runtime),
      maskedPaths: ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
}
