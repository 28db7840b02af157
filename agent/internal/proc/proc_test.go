package proc

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"sandbar/agent/internal/initproc"
)

func TestMergeEnv(t *testing.T) {
	tests := []struct {
		name    string
		base    []string
		overlay map[string]string
		want    []string
	}{
		{"empty", nil, nil, []string{}},
		{"base only", []string{"A=1", "B=2"}, nil, []string{"A=1", "B=2"}},
		{"override keeps position", []string{"A=1", "B=2"}, map[string]string{"A": "x"}, []string{"A=x", "B=2"}},
		{"new keys sorted", []string{"A=1"}, map[string]string{"Z": "z", "M": "m"}, []string{"A=1", "M=m", "Z=z"}},
		{"duplicate base key collapses", []string{"A=1", "A=2"}, map[string]string{"A": "x"}, []string{"A=x"}},
		{"value with equals", []string{"A=1"}, map[string]string{"B": "k=v"}, []string{"A=1", "B=k=v"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mergeEnv(tt.base, tt.overlay); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestPrepare(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name      string
		cfg       Config
		spec      Spec
		wantPath  string
		wantDir   string
		wantEnv   []string // entries that must be present
		wantError bool
	}{
		{"defaults", Config{}, Spec{Command: "true"}, DefaultShell, "/", []string{"PATH=" + DefaultPath}, false},
		{"image PATH kept", Config{BaseEnv: []string{"PATH=/opt/bin"}}, Spec{Command: "true"}, DefaultShell, "/", []string{"PATH=/opt/bin"}, false},
		{"missing shell falls back", Config{}, Spec{Command: "true", Shell: "/no/such/shell"}, FallbackShell, "/", nil, false},
		{"shell by name", Config{}, Spec{Command: "true", Shell: "sh"}, "", "/", nil, false},
		{"default cwd", Config{DefaultCwd: dir}, Spec{Command: "true"}, DefaultShell, dir, nil, false},
		{"relative cwd", Config{DefaultCwd: "/"}, Spec{Command: "true", Cwd: "tmp"}, DefaultShell, "/tmp", nil, false},
		{"pty gets TERM", Config{}, Spec{Command: "true", PTY: true}, DefaultShell, "/", []string{"TERM=" + DefaultTerm}, false},
		{"pty keeps TERM", Config{BaseEnv: []string{"TERM=dumb"}}, Spec{Command: "true", PTY: true}, DefaultShell, "/", []string{"TERM=dumb"}, false},
		{"missing cwd", Config{}, Spec{Command: "true", Cwd: "/no/such/dir"}, "", "", nil, true},
		{"empty command", Config{}, Spec{}, "", "", nil, true},
		{"bad env key", Config{}, Spec{Command: "true", Env: map[string]string{"A=B": "1"}}, "", "", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.cfg.Prepare(tt.spec)
			if tt.wantError {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("err %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantPath == "" {
				// Looked up in PATH: wherever it is found first.
				if !strings.HasSuffix(p.Path, "/sh") {
					t.Fatalf("path %q", p.Path)
				}
			} else if p.Path != tt.wantPath {
				t.Fatalf("path %q, want %q", p.Path, tt.wantPath)
			}
			if p.Dir != tt.wantDir {
				t.Fatalf("dir %q, want %q", p.Dir, tt.wantDir)
			}
			if want := []string{p.Path, "-c", tt.spec.Command}; !reflect.DeepEqual(p.Argv, want) {
				t.Fatalf("argv %q", p.Argv)
			}
			for _, kv := range tt.wantEnv {
				if !hasEntry(p.Env, kv) {
					t.Fatalf("env %q lacks %q", p.Env, kv)
				}
			}
		})
	}
}

func hasEntry(env []string, kv string) bool {
	for _, e := range env {
		if e == kv {
			return true
		}
	}
	return false
}

type collector struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *collector) sink(b []byte) {
	c.mu.Lock()
	c.buf.Write(b)
	c.mu.Unlock()
}

func (c *collector) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func run(t *testing.T, command string, o Options) (*Process, *collector, *collector) {
	t.Helper()
	p, err := Config{}.Prepare(Spec{Command: command, PTY: o.PTY})
	if err != nil {
		t.Fatal(err)
	}
	pr, err := Start(initproc.Default(), p, o)
	if err != nil {
		t.Fatal(err)
	}
	return pr, &collector{}, &collector{}
}

func TestStartPipesAndGrace(t *testing.T) {
	tests := []struct {
		name       string
		command    string
		wantOut    string
		wantErr    string
		wantStatus ExitStatus
		maxTime    time.Duration
	}{
		{"streams and code", "echo out; echo err >&2; exit 3", "out\n", "err\n", ExitStatus{Code: 3}, 2 * time.Second},
		{"signal", "echo a; kill -9 $$", "a\n", "", ExitStatus{Code: -1, Signal: 9}, 2 * time.Second},
		// A background child holds stdout open: the grace bounds the wait.
		{"background holder", "sleep 5 & echo done", "done\n", "", ExitStatus{}, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			p, out, errc := run(t, tt.command, Options{})
			defer KillGroup(p.Pid)
			po, pe := NewPump(p.Stdout, out.sink), NewPump(p.Stderr, errc.sink)
			ws := <-p.Done
			Finish(ExitGrace, po, pe)
			if d := time.Since(start); d > tt.maxTime {
				t.Fatalf("took %v", d)
			}
			if got := StatusOf(ws); got != tt.wantStatus {
				t.Fatalf("status %+v, want %+v", got, tt.wantStatus)
			}
			if out.String() != tt.wantOut || errc.String() != tt.wantErr {
				t.Fatalf("stdout %q stderr %q", out.String(), errc.String())
			}
		})
	}
}

func TestStdinPipe(t *testing.T) {
	p, out, _ := run(t, "tr a-z A-Z", Options{Stdin: true})
	po := NewPump(p.Stdout, out.sink)
	if _, err := p.Stdin.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	p.Stdin.Close()
	<-p.Done
	Finish(ExitGrace, po, NewPump(p.Stderr, func([]byte) {}))
	if out.String() != "HELLO" {
		t.Fatalf("stdout %q", out.String())
	}
}

func TestPTY(t *testing.T) {
	p, out, _ := run(t, "tty; echo err >&2; stty size", Options{PTY: true, Cols: 100, Rows: 30})
	if p.Stderr != nil || p.PTY == nil {
		t.Fatal("pty process should have no separate stderr")
	}
	po := NewPump(p.Stdout, out.sink)
	<-p.Done
	Finish(ExitGrace, po)
	got := out.String()
	if !strings.HasPrefix(got, "/dev/pts/") || !strings.Contains(got, "err\r\n") || !strings.Contains(got, "30 100") {
		t.Fatalf("pty output %q", got)
	}
}

func TestDetachedPumpKeepsBackgroundAlive(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "alive")
	// The background job writes to stdout long after the leader exited and
	// the pump detached; it must not get SIGPIPE.
	p, out, _ := run(t, fmt.Sprintf("echo first; (sleep 0.5; echo late; echo late >&2; touch %s) &", marker), Options{})
	defer KillGroup(p.Pid)
	po, pe := NewPump(p.Stdout, out.sink), NewPump(p.Stderr, func([]byte) {})
	<-p.Done
	Finish(ExitGrace, po, pe)
	if out.String() != "first\n" {
		t.Fatalf("stdout %q", out.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("background job died after the pump detached")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out.String() != "first\n" {
		t.Fatalf("sink called after Finish: %q", out.String())
	}
}
