package initproc

import (
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

func startSh(t *testing.T, script string) (int, <-chan syscall.WaitStatus) {
	t.Helper()
	pid, done, err := Default().Start("/bin/sh", []string{"/bin/sh", "-c", script}, &syscall.ProcAttr{
		Env: []string{"PATH=/usr/bin:/bin"},
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	return pid, done
}

func wait(t *testing.T, done <-chan syscall.WaitStatus) syscall.WaitStatus {
	t.Helper()
	select {
	case ws := <-done:
		return ws
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for exit status")
	}
	return 0
}

func TestExitStatuses(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		code     int
		signaled syscall.Signal
	}{
		{"success", "exit 0", 0, 0},
		{"code", "exit 7", 7, 0},
		{"signal", "kill -9 $$", 0, syscall.SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, done := startSh(t, tt.script)
			ws := wait(t, done)
			if tt.signaled != 0 {
				if !ws.Signaled() || ws.Signal() != tt.signaled {
					t.Fatalf("status %v, want signal %v", ws, tt.signaled)
				}
				return
			}
			if !ws.Exited() || ws.ExitStatus() != tt.code {
				t.Fatalf("status %v, want exit %d", ws, tt.code)
			}
		})
	}
}

func TestManyConcurrentStarts(t *testing.T) {
	const n = 40
	dones := make([]<-chan syscall.WaitStatus, n)
	for i := range dones {
		_, dones[i] = startSh(t, "exit 3")
	}
	for _, d := range dones {
		if ws := wait(t, d); ws.ExitStatus() != 3 {
			t.Fatalf("status %v", ws)
		}
	}
	if r := Default().Running(); r != 0 {
		t.Fatalf("%d commands still registered", r)
	}
}

func TestStartError(t *testing.T) {
	_, _, err := Default().Start("/nonexistent/bin", []string{"x"}, &syscall.ProcAttr{
		Sys: &syscall.SysProcAttr{Setpgid: true},
	})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/bin") {
		t.Fatalf("err %v", err)
	}
}

func TestOrphansReapedAsSubreaper(t *testing.T) {
	if err := SetSubreaper(); err != nil {
		t.Skip(err)
	}
	before := Default().Orphans()
	// The grandchild outlives sh and is re-parented to us.
	_, done := startSh(t, "sleep 0.2 & exit 0")
	wait(t, done)
	deadline := time.Now().Add(5 * time.Second)
	for Default().Orphans() == before {
		if time.Now().After(deadline) {
			t.Fatal("orphan was not reaped")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatchSignalsCatchesTerm(t *testing.T) {
	ch := WatchSignals(false)
	defer signal.Reset(syscall.SIGTERM, syscall.SIGINT)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		if err := syscall.Kill(os.Getpid(), sig); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-ch:
			if got != sig {
				t.Fatalf("got %v, want %v", got, sig)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%v not delivered", sig)
		}
	}
}

func TestShutdownTermThenKill(t *testing.T) {
	pidTerm, doneTerm := startSh(t, "exec sleep 100")
	pidTrap, doneTrap := startSh(t, "trap '' TERM; sleep 100 & wait; sleep 100")
	time.Sleep(100 * time.Millisecond) // let the trap be installed
	start := time.Now()
	Default().Shutdown(300*time.Millisecond, false)
	if ws := wait(t, doneTerm); !ws.Signaled() || ws.Signal() != syscall.SIGTERM {
		t.Fatalf("pid %d status %v, want SIGTERM", pidTerm, ws)
	}
	if ws := wait(t, doneTrap); !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("pid %d status %v, want SIGKILL", pidTrap, ws)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
}
