// Command sandbar-agent is the in-sandbox agent: PID 1 of the sandbox and
// the HTTP server that runs commands and moves files for the sandbar server.
package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"sandbar/agent/internal/exec"
	"sandbar/agent/internal/hostexec"
	"sandbar/agent/internal/initproc"
	"sandbar/agent/internal/proc"
	"sandbar/agent/internal/server"
	"sandbar/agent/internal/session"
	"sandbar/agent/internal/users"
)

const defaultAddr = "0.0.0.0:2024"

type config struct {
	token     string
	addr      string
	cwd       string
	user      string // default user spec for commands; "" = the agent's own (root)
	ringBytes int
	threads   int // OS threads to start at once and keep (SANDBAR_AGENT_THREADS)
	baseEnv   []string
}

// loadConfig reads the agent's variables and removes them from the
// environment that commands inherit.
func loadConfig() (config, error) {
	c := config{addr: defaultAddr, cwd: "/", ringBytes: session.DefaultRingBytes}
	take := func(key string) string {
		v := os.Getenv(key)
		os.Unsetenv(key)
		return v
	}
	c.token = take("SANDBAR_AGENT_TOKEN")
	if v := take("SANDBAR_AGENT_ADDR"); v != "" {
		c.addr = v
	}
	if v := take("SANDBAR_AGENT_CWD"); v != "" {
		c.cwd = v
	}
	c.user = take("SANDBAR_AGENT_USER")
	if v := take("SANDBAR_AGENT_RING_BYTES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("SANDBAR_AGENT_RING_BYTES=%q: want a positive integer", v)
		}
		c.ringBytes = n
	}
	if v := take("SANDBAR_AGENT_THREADS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 1024 {
			return c, fmt.Errorf("SANDBAR_AGENT_THREADS=%q: want an integer from 0 to 1024", v)
		}
		c.threads = n
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SANDBAR_AGENT_") {
			c.baseEnv = append(c.baseEnv, kv)
		}
	}
	return c, nil
}

// logLine is one JSON log line; msg comes first.
type logLine struct {
	Msg     string `json:"msg"`
	Addr    string `json:"addr,omitempty"`
	Error   string `json:"error,omitempty"`
	Warning string `json:"warning,omitempty"`
}

// logJSON writes one JSON log line to stderr.
func logJSON(l logLine) {
	b, err := json.Marshal(l)
	if err != nil {
		return
	}
	os.Stderr.Write(append(b, '\n'))
}

func fatal(msg string, err error) {
	logJSON(logLine{Msg: msg, Error: err.Error()})
	os.Exit(1)
}

// newHandler wires the agent's components from cfg.
func newHandler(cfg config, reaper *initproc.Reaper) *server.Server {
	procCfg := proc.Config{BaseEnv: cfg.baseEnv, DefaultCwd: cfg.cwd, DefaultUser: cfg.user}
	return server.New(server.Config{
		Token:    cfg.token,
		Exec:     &exec.Runner{Config: procCfg, Reaper: reaper},
		Sessions: session.NewManager(session.Config{Proc: procCfg, Reaper: reaper, RingBytes: cfg.ringBytes}),
	})
}

// hostExec is `sandbar-agent host-exec`: the server's launcher of host
// programs (internal/hostexec), not the in-sandbox agent.
func hostExec() {
	// Die with the server (stdin's end also ends the loop). Signals meant for
	// the server's process group (^C) are caught, not ignored: an ignored
	// disposition would be inherited by the programs started here.
	const prSetPdeathsig = 1
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, prSetPdeathsig, uintptr(syscall.SIGKILL), 0)
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	go func() {
		for range sig {
		}
	}()
	if err := hostexec.Serve(os.Stdin, os.Stdout); err != nil {
		fatal("host-exec", err)
	}
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "host-exec" && !initproc.IsInit() {
		hostExec()
		return
	}
	cfg, err := loadConfig()
	if err != nil {
		fatal("bad configuration", err)
	}
	isInit := initproc.IsInit()
	if !isInit {
		// Reap our commands' orphans even when something else is PID 1.
		_ = initproc.SetSubreaper()
	}
	signals := initproc.WatchSignals(isInit)
	reaper := initproc.Default()
	if cfg.user != "" {
		// Resolved again for every command (the image may add users later);
		// a default that does not resolve now fails each command that uses it.
		if _, err := users.System.Resolve(cfg.user); err != nil {
			logJSON(logLine{Msg: "default user does not resolve", Warning: "SANDBAR_AGENT_USER=" + cfg.user + ": " + err.Error()})
		}
	}
	handler := newHandler(cfg, reaper)

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		fatal("listen failed", err)
	}
	line := logLine{Msg: "agent listening", Addr: ln.Addr().String()}
	if cfg.token == "" {
		line.Warning = "SANDBAR_AGENT_TOKEN is not set; every authenticated request is rejected"
	}
	logJSON(line)

	// Threads for later, while the sandbox's pids limit still has room (see ReserveThreads).
	if cfg.threads > 0 {
		go initproc.ReserveThreads(cfg.threads)
	}

	srv := server.NewHTTPServer(handler)
	go func() {
		if err := srv.Serve(ln); err != nil {
			fatal("serve failed", err)
		}
	}()
	<-signals
	reaper.Shutdown(initproc.ShutdownGrace, isInit)
	os.Exit(0)
}
