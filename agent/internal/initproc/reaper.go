// Package initproc holds the agent's init duties: one wait4(-1) loop that
// reaps every child (its own commands and orphans re-parented to it) and
// delivers exit statuses to the commands that own them, plus the shutdown
// sequence run on SIGTERM/SIGINT.
//
// Nothing else in the process may wait for children (no exec.Cmd.Wait, no
// os.Process.Wait): the reaper would steal their statuses and vice versa.
package initproc

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// ShutdownGrace is how long Shutdown waits between SIGTERM and SIGKILL.
const ShutdownGrace = 2 * time.Second

// idlePoll bounds how long the loop sleeps after ECHILD before trying again;
// children we did not start (re-parented orphans) can appear at any time.
const idlePoll = time.Second

// maxGroups is the size above which Start prunes process groups that no
// longer exist from the set used by Shutdown.
const maxGroups = 256

// Reaper owns waiting for all children of the process.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan syscall.WaitStatus // pid -> exit delivery
	groups  map[int]struct{}                // pgids of commands started here
	orphans uint64                          // reaped pids nobody waited for
	kick    chan struct{}
}

var (
	defaultOnce   sync.Once
	defaultReaper *Reaper
)

// Default returns the process-wide reaper, starting its loop on first use.
// There must be only one: wait4(-1) takes every child.
func Default() *Reaper {
	defaultOnce.Do(func() {
		defaultReaper = &Reaper{
			waiters: make(map[int]chan syscall.WaitStatus),
			groups:  make(map[int]struct{}),
			kick:    make(chan struct{}, 1),
		}
		sigchld := make(chan os.Signal, 1)
		signal.Notify(sigchld, syscall.SIGCHLD)
		go func() {
			for range sigchld {
				defaultReaper.wake()
			}
		}()
		go defaultReaper.loop()
	})
	return defaultReaper
}

func (r *Reaper) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Start forks and execs argv0 and returns its pid and a channel that receives
// its wait status exactly once. The pid is registered while r.mu is held
// across the fork, so the reaper loop (which takes r.mu before dispatching)
// can never see the exit of a pid it does not know yet. Hence a status for
// an unknown pid always belongs to an orphan and is dropped; stashing it for
// later registration would only risk handing a stale status to a new command
// that happens to reuse the pid.
//
// attr.Sys must make the child a process group leader (Setpgid or Setsid);
// Start records the pid as a process group for Shutdown.
func (r *Reaper) Start(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan syscall.WaitStatus, error) {
	done := make(chan syscall.WaitStatus, 1)
	r.mu.Lock()
	pid, err := syscall.ForkExec(argv0, argv, attr)
	if err != nil {
		r.mu.Unlock()
		return 0, nil, fmt.Errorf("fork/exec %s: %w", argv0, err)
	}
	r.waiters[pid] = done
	if len(r.groups) >= maxGroups {
		r.pruneGroupsLocked()
	}
	r.groups[pid] = struct{}{}
	r.mu.Unlock()
	r.wake()
	return pid, done, nil
}

func (r *Reaper) pruneGroupsLocked() {
	for pgid := range r.groups {
		if !groupAlive(pgid) {
			delete(r.groups, pgid)
		}
	}
}

// groupAlive reports whether any process (zombies included) is in group pgid.
func groupAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) != syscall.ESRCH
}

// Orphans returns how many children were reaped that no command owned.
func (r *Reaper) Orphans() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}

// Running returns how many started commands have not been reaped yet.
func (r *Reaper) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.waiters)
}

func (r *Reaper) loop() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.ECHILD):
			// No children at all: sleep until Start or SIGCHLD says otherwise.
			select {
			case <-r.kick:
			case <-time.After(idlePoll):
			}
			continue
		case err != nil:
			time.Sleep(10 * time.Millisecond) // should not happen; do not spin
			continue
		}
		if !ws.Exited() && !ws.Signaled() {
			continue // stopped/continued (traced children); not an exit
		}
		r.dispatch(pid, ws)
	}
}

func (r *Reaper) dispatch(pid int, ws syscall.WaitStatus) {
	r.mu.Lock()
	done, ok := r.waiters[pid]
	if ok {
		delete(r.waiters, pid)
	} else {
		r.orphans++
	}
	r.mu.Unlock()
	if ok {
		done <- ws // buffered, never blocks
	}
}

// Shutdown sends SIGTERM to every command's process group, waits up to grace
// for them to go away, then SIGKILLs what is left. When everything is true
// (the agent is PID 1 of its namespace) it also SIGKILLs every other process
// in the namespace, since they would all die with it anyway.
func (r *Reaper) Shutdown(grace time.Duration, everything bool) {
	r.mu.Lock()
	pgids := make([]int, 0, len(r.groups))
	for pgid := range r.groups {
		pgids = append(pgids, pgid)
	}
	r.mu.Unlock()

	for _, pgid := range pgids {
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && anyAlive(pgids) {
		time.Sleep(20 * time.Millisecond)
	}
	for _, pgid := range pgids {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	if everything {
		// kill(-1) as PID 1 signals every process in the namespace but us.
		_ = syscall.Kill(-1, syscall.SIGKILL)
	}
}

func anyAlive(pgids []int) bool {
	for _, pgid := range pgids {
		if groupAlive(pgid) {
			return true
		}
	}
	return false
}

// SetSubreaper marks the process as a child subreaper, so that orphaned
// descendants are re-parented to it (and reaped by the loop) even when it is
// not PID 1.
func SetSubreaper() error {
	const prSetChildSubreaper = 36
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		return fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", errno)
	}
	return nil
}

// IsInit reports whether the process is PID 1 of its PID namespace.
func IsInit() bool {
	return os.Getpid() == 1
}

// WatchSignals returns a channel that receives SIGTERM and SIGINT; the
// caller then runs Shutdown and exits 0.
//
// As PID 1 a Go program that gets a signal it has no handler for may exit
// (the runtime's default for SIGHUP/SIGQUIT is to die), taking the whole
// sandbox with it, so as init SIGHUP and SIGQUIT are caught and dropped.
// Catching (not ignoring) keeps the children's dispositions at default.
func WatchSignals(isInit bool) <-chan os.Signal {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	if isInit {
		absorb := make(chan os.Signal, 4)
		signal.Notify(absorb, syscall.SIGHUP, syscall.SIGQUIT)
		go func() {
			for range absorb {
			}
		}()
	}
	return term
}
