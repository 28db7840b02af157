package exec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sandbar/agent/internal/initproc"
	"sandbar/agent/internal/proc"
)

func newRunner(t *testing.T) *Runner {
	return &Runner{
		Config: proc.Config{BaseEnv: []string{"PATH=/usr/bin:/bin", "BASE=base"}, DefaultCwd: t.TempDir()},
		Reaper: initproc.Default(),
	}
}

func TestRun(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		req  Request
		want Result
	}{
		{"stdout stderr code", Request{Command: "echo out; echo err >&2; exit 4"},
			Result{Stdout: "out\n", Stderr: "err\n", ExitCode: 4}},
		{"env layered", Request{Command: `echo "$BASE $FOO"`, Env: map[string]string{"FOO": "bar"}},
			Result{Stdout: "base bar\n"}},
		{"env overrides base", Request{Command: `echo "$BASE"`, Env: map[string]string{"BASE": "over"}},
			Result{Stdout: "over\n"}},
		{"cwd", Request{Command: "pwd", Cwd: dir}, Result{Stdout: dir + "\n"}},
		{"default shell is bash", Request{Command: `echo "$0"`}, Result{Stdout: "/bin/bash\n"}},
		{"shell fallback", Request{Command: `echo "$0"`, Shell: "/no/such/shell"}, Result{Stdout: "/bin/sh\n"}},
		{"stdin is /dev/null", Request{Command: "cat; echo end"}, Result{Stdout: "end\n"}},
		{"killed by signal", Request{Command: "kill -9 $$"}, Result{ExitCode: -1}},
		{"truncation", Request{Command: "printf 0123456789; printf abc >&2", MaxOutputBytes: 4},
			Result{Stdout: "0123" + TruncationMarker(4), Stderr: "abc", Truncated: true}},
		{"exactly at cap", Request{Command: "printf 0123", MaxOutputBytes: 4}, Result{Stdout: "0123"}},
		{"background holder does not block", Request{Command: "sleep 3 & echo started"},
			Result{Stdout: "started\n"}},
	}
	r := newRunner(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			got, err := r.Run(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("took %v", d)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name string
		req  Request
	}{
		{"empty command", Request{}},
		{"negative timeout", Request{Command: "true", TimeoutSeconds: -1}},
		{"negative cap", Request{Command: "true", MaxOutputBytes: -1}},
		{"missing cwd", Request{Command: "true", Cwd: "/no/such/dir"}},
	}
	r := newRunner(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := r.Run(context.Background(), tt.req); !errors.Is(err, proc.ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
		})
	}
}

// sleepers lists live processes whose command line is exactly "sleep arg".
func sleepers(t *testing.T, arg string) []string {
	t.Helper()
	matches, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var found []string
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		if bytes.Equal(b, []byte("sleep\x00"+arg+"\x00")) {
			found = append(found, m)
		}
	}
	return found
}

func TestTimeoutKillsGroup(t *testing.T) {
	arg := fmt.Sprintf("%d.%03d", 100+rand.Intn(800), rand.Intn(1000))
	r := newRunner(t)
	start := time.Now()
	got, err := r.Run(context.Background(), Request{
		Command:        fmt.Sprintf("echo before; sleep %s & sleep %s", arg, arg),
		TimeoutSeconds: 0.3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !got.TimedOut || got.ExitCode != -1 || got.Stdout != "before\n" {
		t.Fatalf("got %+v", got)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	// SIGKILL is delivered at once, but give the kernel a moment to tear down.
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := sleepers(t, arg)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep processes survived the timeout: %v", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClientGoneKills(t *testing.T) {
	r := newRunner(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.Run(ctx, Request{Command: "sleep 100"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestLargeOutputDrained(t *testing.T) {
	r := newRunner(t)
	// 1 MiB through a 64 KiB pipe with a 1 KiB cap: the command must not block.
	got, err := r.Run(context.Background(), Request{
		Command:        "head -c 1048576 /dev/zero | tr '\\0' x; echo; echo ok >&2",
		MaxOutputBytes: 1024,
		TimeoutSeconds: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("x", 1024) + TruncationMarker(1024)
	if got.Stdout != want || got.Stderr != "ok\n" || !got.Truncated || got.TimedOut {
		t.Fatalf("stdout len %d stderr %q result %+v", len(got.Stdout), got.Stderr, got.TimedOut)
	}
}
