package proc

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"sandbar/agent/internal/initproc"
	"sandbar/agent/internal/pty"
)

// Options select how the child's standard streams are wired.
type Options struct {
	Stdin      bool   // give the child a stdin pipe (else /dev/null); ignored with PTY
	PTY        bool   // run on a new pty; stderr is merged into stdout
	Cols, Rows uint16 // pty size
}

// Process is a started command. Its pid is also its process group id.
type Process struct {
	Pid  int
	Done <-chan syscall.WaitStatus // receives the leader's status once

	Stdin  *os.File // write end of the stdin pipe, or the pty master; nil without Stdin
	Stdout *os.File // read end of stdout, or the pty master
	Stderr *os.File // read end of stderr; nil with PTY
	PTY    *os.File // the pty master, nil without PTY
}

// Start starts p through the reaper r as its own process group leader.
func Start(r *initproc.Reaper, p Prepared, o Options) (*Process, error) {
	if o.PTY {
		return startPTY(r, p, o)
	}
	var closers []int // fds to close in the parent once the child has them
	defer func() {
		for _, fd := range closers {
			syscall.Close(fd)
		}
	}()
	var parent []int // parent ends, closed on failure
	fail := func(err error) (*Process, error) {
		for _, fd := range parent {
			syscall.Close(fd)
		}
		return nil, err
	}

	var stdinChild, stdinParent int
	if o.Stdin {
		r, w, err := pipe()
		if err != nil {
			return fail(err)
		}
		stdinChild, stdinParent = r, w
		closers, parent = append(closers, r), append(parent, w)
	} else {
		fd, err := syscall.Open(os.DevNull, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fail(fmt.Errorf("open %s: %w", os.DevNull, err))
		}
		stdinChild = fd
		closers = append(closers, fd)
	}
	outR, outW, err := pipe()
	if err != nil {
		return fail(err)
	}
	closers, parent = append(closers, outW), append(parent, outR)
	errR, errW, err := pipe()
	if err != nil {
		return fail(err)
	}
	closers, parent = append(closers, errW), append(parent, errR)
	pipes := []int{outW, errW}
	if o.Stdin {
		pipes = append(pipes, stdinChild)
	}
	if err := giveTo(p.Cred, pipes...); err != nil {
		return fail(err)
	}

	pid, done, err := r.Start(p.Path, p.Argv, &syscall.ProcAttr{
		Dir:   p.Dir,
		Env:   p.Env,
		Files: []uintptr{uintptr(stdinChild), uintptr(outW), uintptr(errW)},
		Sys:   &syscall.SysProcAttr{Setpgid: true, Credential: p.Cred},
	})
	if err != nil {
		return fail(classifyStartErr(err))
	}
	proc := &Process{Pid: pid, Done: done}
	proc.Stdout, err = pollable(outR, "stdout")
	if err == nil {
		proc.Stderr, err = pollable(errR, "stderr")
	}
	if err == nil && o.Stdin {
		proc.Stdin, err = pollable(stdinParent, "stdin")
	}
	if err != nil {
		// Cannot happen in practice (fcntl on a fresh pipe); do not leak the child.
		KillGroup(pid)
		return fail(err)
	}
	return proc, nil
}

func startPTY(r *initproc.Reaper, p Prepared, o Options) (*Process, error) {
	cols, rows := o.Cols, o.Rows
	if cols == 0 {
		cols = pty.DefaultCols
	}
	if rows == 0 {
		rows = pty.DefaultRows
	}
	master, slave, _, err := pty.Open(cols, rows)
	if err != nil {
		return nil, fmt.Errorf("start on pty: %w", err)
	}
	defer syscall.Close(slave)
	if err := giveTo(p.Cred, slave); err != nil {
		master.Close()
		return nil, err
	}
	pid, done, err := r.Start(p.Path, p.Argv, &syscall.ProcAttr{
		Dir:   p.Dir,
		Env:   p.Env,
		Files: []uintptr{uintptr(slave), uintptr(slave), uintptr(slave)},
		// Setsid makes the child a session and process group leader; Ctty
		// is the child's fd 0, the slave.
		Sys: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Credential: p.Cred},
	})
	if err != nil {
		master.Close()
		return nil, classifyStartErr(err)
	}
	return &Process{Pid: pid, Done: done, Stdin: master, Stdout: master, PTY: master}, nil
}

// giveTo makes cred's uid the owner of the child's standard streams (pipes
// or the pty slave; never /dev/null), as runc does, so that a command
// running as that user can reopen them (/dev/stdout, /proc/self/fd/N, its
// tty). The group is left alone. Nothing to do without cred.
func giveTo(cred *syscall.Credential, fds ...int) error {
	if cred == nil {
		return nil
	}
	for _, fd := range fds {
		if err := syscall.Fchown(fd, int(cred.Uid), -1); err != nil {
			// EPERM (the agent is not root) is the request's problem, as
			// the fork would fail the same way.
			return classifyStartErr(fmt.Errorf("chown stdio to uid %d: %w", cred.Uid, err))
		}
	}
	return nil
}

// pipe returns a close-on-exec pipe as raw blocking fds (the child's end must
// be blocking; pollable switches the parent's end to non-blocking).
func pipe() (r, w int, err error) {
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC); err != nil {
		return -1, -1, fmt.Errorf("pipe: %w", err)
	}
	return fds[0], fds[1], nil
}

// pollable wraps fd as an *os.File registered with the runtime poller, so
// that Close and deadlines interrupt blocked reads and writes.
func pollable(fd int, name string) (*os.File, error) {
	if err := syscall.SetNonblock(fd, true); err != nil {
		return nil, fmt.Errorf("set %s non-blocking: %w", name, err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// classifyStartErr marks exec failures caused by the request as ErrInvalid.
func classifyStartErr(err error) error {
	for _, e := range []syscall.Errno{syscall.ENOENT, syscall.ENOTDIR, syscall.EACCES, syscall.ENOEXEC, syscall.EPERM} {
		if errors.Is(err, e) {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return err
}

// KillGroup sends SIGKILL to process group pgid; a group that is already gone
// is not an error.
func KillGroup(pgid int) {
	if pgid > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

// ExitStatus is a wait status in protocol terms.
type ExitStatus struct {
	Code   int // exit code, -1 when killed by a signal
	Signal int // the signal number when killed by a signal, else 0
}

// StatusOf converts a wait status.
func StatusOf(ws syscall.WaitStatus) ExitStatus {
	if ws.Signaled() {
		return ExitStatus{Code: -1, Signal: int(ws.Signal())}
	}
	return ExitStatus{Code: ws.ExitStatus()}
}
