"""Escape probes run inside a sandbox: PROBE_ARGS=<json> python3 probe.py prints {check: result} as JSON.

A result is "ok", "ok:<detail>" or the errno name the attempt failed with (EPERM, ENOENT, ...).
"""
import ctypes, errno, json, os, selectors, socket, struct, sys, time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ARGS = json.loads(os.environ["PROBE_ARGS"])

SYS_init_module, SYS_finit_module, SYS_add_key, SYS_keyctl, SYS_reboot = 175, 313, 248, 250, 169
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
PTRACE_SEIZE = 0x4206
KEY_SPEC_SESSION, KEY_SPEC_USER = -3, -4
KEYCTL_SETPERM, KEYCTL_LINK, KEYCTL_UNLINK, KEYCTL_SEARCH, KEYCTL_READ = 5, 8, 9, 10, 11


def res(fn):
    """Run fn: 'ok' / 'ok:<detail>' on success, else the errno name."""
    try:
        ctypes.set_errno(0)
        r = fn()
    except OSError as e:
        return errno.errorcode.get(e.errno, "errno%s" % e.errno) if e.errno else type(e).__name__
    if isinstance(r, socket.socket):
        r.close()
        return "ok"
    if isinstance(r, bool) or not isinstance(r, int):
        return "ok" if r is None else "ok:%s" % (r,)
    return errno.errorcode.get(ctypes.get_errno(), "errno%s" % ctypes.get_errno()) if r == -1 else "ok"


def read(path, n=200):
    with open(path, "rb") as f:
        return f.read(n).decode(errors="replace")


def open_w(path):
    os.close(os.open(path, os.O_WRONLY))


def mount(src, target, fstype, flags=0, data=None):
    os.makedirs(target, exist_ok=True)
    return libc.mount(src, target.encode(), fstype, flags, data)


def mknod_blk(path):
    try:
        os.unlink(path)
    except OSError:
        pass
    os.mknod(path, 0o600 | 0o060000, os.makedev(8, 0))


def mknod_then_open(path):
    m = res(lambda: mknod_blk(path))
    return "mknod:%s open:%s" % (m, res(lambda: os.close(os.open(path, os.O_RDONLY))) if m == "ok" else "-")


def in_child(fn):
    """Run fn in a forked child (for chroot and namespace tricks) and return its result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = fn()
        except BaseException as e:
            out = "raised %s" % e
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.waitpid(pid, 0)
    return json.loads(data)


def chroot_escape():
    """The classic chroot break-out (CAP_SYS_CHROOT is granted), then look for the marker."""
    os.makedirs("/tmp/jail", exist_ok=True)
    libc.chroot(b"/tmp/jail")
    for _ in range(40):
        os.chdir("..")
    libc.chroot(b".")
    return {"marker": res(lambda: read(ARGS["marker"])), "root": sorted(os.listdir("/"))}


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int), ("f_handle", ctypes.c_ubyte * 128)]


def open_by_handle():
    """'Shocker': a file handle of the agent bind mount opened by handle (needs CAP_DAC_READ_SEARCH)."""
    fh = FileHandle()
    fh.handle_bytes = 128
    mount_id = ctypes.c_int()
    r = res(lambda: libc.name_to_handle_at(-100, b"/.sandbar", ctypes.byref(fh), ctypes.byref(mount_id), 0))
    if r != "ok":
        return "name_to_handle_at:" + r
    fd = os.open("/", os.O_RDONLY)
    return "open_by_handle_at:" + res(lambda: libc.open_by_handle_at(fd, ctypes.byref(fh), 0))


def mount_roots():
    """Each mount's root as /proc/self/mountinfo shows it, with what stat() of that path gives here."""
    out = {}
    for line in open("/proc/self/mountinfo"):
        root = line.split()[3]
        out[root] = res(lambda: os.stat(root))
    return out


def cmdlines():
    out = {}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                out[p] = read("/proc/%s/cmdline" % p, 4096).replace("\0", " ")
            except OSError:
                pass
    return out


def grep_procs(needle):
    return sorted(int(p) for p, c in cmdlines().items() if needle in c)


def via_proc_roots(rel):
    """The file as seen through every visible process's root."""
    return sorted(p for p in os.listdir("/proc") if p.isdigit() and os.path.exists("/proc/%s/root%s" % (p, rel)))


def connect_all(targets, timeout=2.0):
    """Non-blocking TCP connects to every 'ip:port' at once: open, refused or timeout."""
    sel, out = selectors.DefaultSelector(), {}
    for t in targets:
        ip, port = t.rsplit(":", 1)
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((ip, int(port)))
        sel.register(s, selectors.EVENT_WRITE, t)
    deadline = time.time() + timeout
    while sel.get_map() and time.time() < deadline:
        for key, _ in sel.select(timeout=max(0, deadline - time.time())):
            err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            out[key.data] = "open" if err == 0 else ("refused" if err == errno.ECONNREFUSED else errno.errorcode.get(err, str(err)))
            sel.unregister(key.fileobj)
            key.fileobj.close()
    for key in list(sel.get_map().values()):
        out[key.data] = "timeout"
        key.fileobj.close()
    return out


def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def raw_ping(dst):
    """ICMP echo over a raw socket: 'reply' or 'no reply' within 1.5 s."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(0.3)
    body = struct.pack("!BBHHH", 8, 0, 0, 0x5342, 1) + b"sandbar!"
    s.sendto(struct.pack("!BBHHH", 8, 0, checksum(body), 0x5342, 1) + b"sandbar!", (dst, 0))
    deadline = time.time() + 1.5
    while time.time() < deadline:
        try:
            data, addr = s.recvfrom(2048)
        except socket.timeout:
            continue
        if addr[0] == dst and data[20] == 0:
            return "reply"
    return "no reply"


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


def keyctl(*args):
    return libc.syscall(SYS_keyctl, *args)


def user_keyring_id():
    """KEYCTL_GET_KEYRING_ID (0) of @u, in hex as /proc/keys shows it."""
    r = keyctl(0, ctypes.c_int(KEY_SPEC_USER), 0)
    return -1 if r == -1 else "%08x" % r


def syslog():
    """SYSLOG_ACTION_READ_ALL: the start of the kernel log."""
    buf = ctypes.create_string_buffer(4096)
    n = libc.klogctl(3, buf, 4096)
    return -1 if n == -1 else buf.raw[:n].decode(errors="replace")[:60]


def add_key(desc, payload, ring):
    p = payload.encode()
    return libc.syscall(SYS_add_key, b"user", desc.encode(), p, len(p), ctypes.c_int(ring))


def share_user_key(desc, payload):
    """A "user" key in @u that any process of uid 0 may read: made in our own session keyring
    (so we possess it and may set its permissions), opened to the owner uid, linked into @u,
    then dropped from the session keyring."""
    kid = add_key(desc, payload, KEY_SPEC_SESSION)
    if kid == -1:
        return "add_key:" + errno.errorcode.get(ctypes.get_errno(), "?")
    for step, r in (
        ("setperm", lambda: keyctl(KEYCTL_SETPERM, kid, 0x3F3F0000)),
        ("link", lambda: keyctl(KEYCTL_LINK, kid, ctypes.c_int(KEY_SPEC_USER))),
        ("unlink_session", lambda: keyctl(KEYCTL_UNLINK, kid, ctypes.c_int(KEY_SPEC_SESSION))),
    ):
        if r() == -1:
            return step + ":" + errno.errorcode.get(ctypes.get_errno(), "?")
    return None


def find_user_key(desc):
    return keyctl(KEYCTL_SEARCH, ctypes.c_int(KEY_SPEC_USER), b"user", desc.encode(), 0)


def read_user_key(desc):
    kid = find_user_key(desc)
    if kid == -1:
        return -1
    buf = ctypes.create_string_buffer(256)
    n = keyctl(KEYCTL_READ, kid, buf, 256)
    return -1 if n == -1 else buf.raw[:n].decode()


def unlink_user_key(desc):
    kid = find_user_key(desc)
    return -1 if kid == -1 else keyctl(KEYCTL_UNLINK, kid, ctypes.c_int(KEY_SPEC_USER))


def in_user_namespace(checks):
    """unshare(CLONE_NEWUSER | CLONE_NEWNS), map uid/gid 0 to ourselves, then run the named checks there."""
    def body():
        r = res(lambda: libc.unshare(CLONE_NEWUSER | CLONE_NEWNS))
        out = {"unshare": r}
        if r != "ok":
            return out
        for f, v in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
            try:
                with open("/proc/self/" + f, "w") as fh:
                    fh.write(v)
            except OSError:
                pass
        out["caps"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
        for name in checks:
            out[name] = run_check(name)
        return out
    return in_child(body)


CHECKS = {
    # The host's filesystem.
    "marker": lambda: res(lambda: read(ARGS["marker"])),
    "marker_in_data_dir": lambda: res(lambda: read(ARGS["dataMarker"])),
    "marker_proc1_root": lambda: res(lambda: read("/proc/1/root" + ARGS["marker"])),
    "marker_dotdot_agent": lambda: res(lambda: read("/.sandbar" + "/.." * 16 + ARGS["marker"])),
    "agent_parent_is_root": lambda: sorted(os.listdir("/.sandbar" + "/.." * 16)) == sorted(os.listdir("/")),
    "chroot_escape": lambda: in_child(chroot_escape),
    "open_by_handle": open_by_handle,
    "mount_roots": mount_roots,
    "data_dir": lambda: res(lambda: os.listdir(ARGS["dataDir"])),
    # The host's processes.
    "host_pid": lambda: res(lambda: read("/proc/%d/cmdline" % ARGS["hostPid"])),
    "host_needle": lambda: grep_procs(ARGS["hostNeedle"]),
    "max_pid": lambda: max(int(p) for p in os.listdir("/proc") if p.isdigit()),
    # Another sandbox.
    "b_needle": lambda: grep_procs(ARGS["bNeedle"]),
    "b_file_via_proc_roots": lambda: via_proc_roots(ARGS["bFile"]),
    "b_file_by_host_path": lambda: res(lambda: read(ARGS["bHostPath"])),
    # Network.
    "connect": lambda: connect_all(ARGS["targets"]),
    "raw_inet": lambda: res(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
    "raw_ip_hdrincl": lambda: res(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)),
    "packet_raw": lambda: res(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))),
    "packet_dgram": lambda: res(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))),
    "raw_ping": lambda: {ip: res(lambda: raw_ping(ip)) for ip in ARGS["pingTargets"]},
    # Mounts.
    "mount_tmpfs": lambda: res(lambda: mount(b"none", "/tmp/m-tmpfs", b"tmpfs")),
    "mount_proc": lambda: res(lambda: mount(b"proc", "/tmp/m-proc", b"proc")),
    "mount_cgroup": lambda: res(lambda: mount(b"cgroup", "/tmp/m-cgroup", b"cgroup", 0, b"memory")),
    "mount_bind_root": lambda: res(lambda: mount(b"/", "/tmp/m-bind", None, 4096)),  # MS_BIND
    "remount_agent_rw": lambda: res(lambda: libc.mount(None, b"/.sandbar", None, 32 | 4096, None)),  # MS_REMOUNT|MS_BIND
    "umount_agent": lambda: res(lambda: libc.umount2(b"/.sandbar", 2)),  # MNT_DETACH
    "write_agent_dir": lambda: res(lambda: os.close(os.open("/.sandbar/planted", os.O_WRONLY | os.O_CREAT, 0o755))),
    "umount_sys_firmware": lambda: res(lambda: libc.umount2(b"/sys/firmware", 2)),
    # ptrace.
    "ptrace_agent": lambda: res(lambda: libc.ptrace(PTRACE_SEIZE, 1, None, None)),
    "ptrace_host_pid": lambda: res(lambda: libc.ptrace(PTRACE_SEIZE, ARGS["hostPid"], None, None)),
    "agent_environ_has_token": lambda: res(lambda: "SANDBAR_AGENT_TOKEN=" in read("/proc/1/environ", 4096)),
    # Devices.
    "mknod_rootfs": lambda: mknod_then_open("/root/sdx"),
    "mknod_tmpfs": lambda: mknod_then_open("/tmp/sdx"),
    "dev": lambda: sorted(os.listdir("/dev")),
    # Kernel.
    "init_module": lambda: res(lambda: libc.syscall(SYS_init_module, None, 0, b"")),
    "finit_module": lambda: res(lambda: libc.syscall(SYS_finit_module, -1, b"", 0)),
    "proc_modules": lambda: res(lambda: read("/proc/modules", 64)),
    "reboot_cad_off": lambda: res(lambda: libc.syscall(SYS_reboot, 0xFEE1DEAD, 672274793, 0, None)),
    "swapon": lambda: res(lambda: libc.swapon(b"/tmp/swap", 0)),
    "syslog": lambda: res(syslog),
    # cgroups, /sys, /proc/sys.
    "sys_fs_cgroup": lambda: res(lambda: sorted(os.listdir("/sys/fs/cgroup"))),
    "release_agent": lambda: [res(lambda: open_w(p)) for p in ("/sys/fs/cgroup/release_agent", "/sys/fs/cgroup/memory/release_agent")],
    "sys_create": lambda: res(lambda: os.close(os.open("/sys/planted", os.O_WRONLY | os.O_CREAT))),
    "core_pattern": lambda: res(lambda: open_w("/proc/sys/kernel/core_pattern")),
    # Identity and time.
    "sethostname": lambda: res(lambda: libc.sethostname(b"pwned", 5)),
    "clock_settime": lambda: res(lambda: libc.clock_settime(0, ctypes.byref(Timespec(1_000_000_000, 0)))),
    "settimeofday": lambda: res(lambda: libc.settimeofday(ctypes.byref(Timespec(1_000_000_000, 0)), None)),
    # Masked paths.
    "sys_firmware": lambda: res(lambda: sorted(os.listdir("/sys/firmware"))),
    "proc_kcore": lambda: res(lambda: read("/proc/kcore", 16)),
    "proc_keys": lambda: res(lambda: read("/proc/keys")),
    # Kernel keyring.
    "keyring_user": lambda: res(user_keyring_id),
    "add_key": lambda: res(lambda: add_key(ARGS["keyDesc"], "x", KEY_SPEC_USER)),
    "share_key": lambda: res(lambda: share_user_key(ARGS["keyDesc"], ARGS["keyPayload"])),
    "read_key": lambda: res(lambda: read_user_key(ARGS["keyDesc"])),
    "unlink_key": lambda: res(lambda: unlink_user_key(ARGS["keyDesc"])),
    # User namespaces.
    "userns": lambda: in_user_namespace(ARGS["usernsChecks"]),
}


def run_check(name):
    try:
        return CHECKS[name]()
    except Exception as e:  # a probe bug, not a result
        return "probe error: %r" % e


print(json.dumps({name: run_check(name) for name in ARGS["checks"]}))
