// Package session runs streaming commands ("sessions") whose output is kept
// in bounded per-stream ring buffers so clients can (re)connect from any
// offset, with idle timeouts, kill-on-disconnect and ttl after exit.
package session

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"sandbar/agent/internal/frame"
	"sandbar/agent/internal/proc"
	"sandbar/agent/internal/pty"
)

// Errors returned by session operations; the server maps them to codes.
var (
	ErrNotFound    = errors.New("no such session")                      // 404 CommandNotFound
	ErrExpired     = errors.New("session expired")                      // 410 SessionExpired
	ErrStdinClosed = errors.New("stdin is closed")                      // 409 Conflict
	ErrNoPTY       = errors.New("session has no pty")                   // 409 Conflict
	ErrFinished    = errors.New("session has exited")                   // 409 Conflict
	ErrInvalid     = fmt.Errorf("invalid session: %w", proc.ErrInvalid) // 400 BadRequest
)

// Options are the resolved settings of a session.
type Options struct {
	ID               string
	Timeout          time.Duration // 0: none
	IdleTimeout      time.Duration // < 0: never
	TTL              time.Duration // < 0: forever
	KillOnDisconnect bool
	PTY              bool
	Cols, Rows       uint16
}

// Session is one streaming command.
type Session struct {
	opts     Options
	pid      int
	proc     *proc.Process
	created  time.Time
	onFinish func(*Session)

	mu          sync.Mutex
	out, errs   *Ring // errs is nil with a pty (stderr merged into stdout)
	changed     chan struct{}
	leaderDone  bool
	finished    bool // leader reaped and output drained: exit info is final
	exit        proc.ExitStatus
	reason      string
	killReason  string // set when the agent itself kills (timeout, idle_timeout)
	readErr     error
	watchers    int
	idleGen     uint64
	idleTimer   *time.Timer
	stdinClosed bool

	// Pacing of writes against attached readers (pace.go).
	readers  map[*reader]struct{}
	advanced chan struct{}
}

func newSession(opts Options, p *proc.Process, ringBytes int, onFinish func(*Session)) *Session {
	s := &Session{
		opts:     opts,
		pid:      p.Pid,
		proc:     p,
		created:  time.Now(),
		onFinish: onFinish,
		out:      NewRing(ringBytes),
		changed:  make(chan struct{}),
		readers:  map[*reader]struct{}{},
		advanced: make(chan struct{}),
	}
	var errPump *proc.Pump
	outPump := proc.NewPump(p.Stdout, s.sink(s.out))
	if p.Stderr != nil {
		s.errs = NewRing(ringBytes)
		errPump = proc.NewPump(p.Stderr, s.sink(s.errs))
	}
	s.mu.Lock()
	s.armIdleLocked() // nobody is watching yet
	s.mu.Unlock()
	go s.run(outPump, errPump)
	return s
}

// ID returns the client's command_id.
func (s *Session) ID() string { return s.opts.ID }

// Pid returns the process (and process group) id.
func (s *Session) Pid() int { return s.pid }

func (s *Session) sink(r *Ring) func([]byte) {
	return func(b []byte) {
		s.mu.Lock()
		s.paceLocked(r, len(b))
		r.Write(b)
		s.notifyLocked()
		s.mu.Unlock()
	}
}

// notifyLocked wakes every stream waiting for a change.
func (s *Session) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Session) run(outPump, errPump *proc.Pump) {
	var timeout <-chan time.Time
	if s.opts.Timeout > 0 {
		t := time.NewTimer(s.opts.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	var ws syscall.WaitStatus
	select {
	case ws = <-s.proc.Done:
	case <-timeout:
		s.kill(frame.ReasonTimeout)
		ws = <-s.proc.Done
	}
	s.mu.Lock()
	s.leaderDone = true
	s.disarmIdleLocked()
	s.mu.Unlock()

	proc.Finish(proc.ExitGrace, outPump, errPump)

	s.mu.Lock()
	if !s.stdinClosed && s.proc.PTY == nil && s.proc.Stdin != nil {
		s.proc.Stdin.Close()
	}
	s.stdinClosed = true
	s.exit = proc.StatusOf(ws)
	switch {
	case s.exit.Signal != 0 && s.killReason != "":
		s.reason = s.killReason
	case s.exit.Signal != 0:
		s.reason = frame.ReasonKilled
	default:
		s.reason = frame.ReasonExited
	}
	for _, p := range []*proc.Pump{outPump, errPump} {
		if p != nil && p.Err() != nil && s.readErr == nil {
			s.readErr = p.Err()
		}
	}
	s.finished = true
	s.notifyLocked()
	s.mu.Unlock()
	if s.onFinish != nil {
		s.onFinish(s)
	}
}

// kill SIGKILLs the process group. reason, if not empty, becomes the exit
// reason when the kill is what ends the command.
func (s *Session) kill(reason string) {
	s.mu.Lock()
	if s.finished {
		// The group is gone (or its id may be reused): nothing to signal.
		s.mu.Unlock()
		return
	}
	if reason != "" && !s.leaderDone && s.killReason == "" {
		s.killReason = reason
	}
	s.mu.Unlock()
	proc.KillGroup(s.pid)
}

// Kill SIGKILLs the session's process group (POST /sessions/{id}/kill).
func (s *Session) Kill() { s.kill("") }

func (s *Session) armIdleLocked() {
	if s.opts.IdleTimeout < 0 || s.leaderDone {
		return
	}
	s.disarmIdleLocked()
	gen := s.idleGen
	s.idleTimer = time.AfterFunc(s.opts.IdleTimeout, func() { s.idleFired(gen) })
}

func (s *Session) disarmIdleLocked() {
	s.idleGen++
	if s.idleTimer != nil {
		s.idleTimer.Stop()
		s.idleTimer = nil
	}
}

func (s *Session) idleFired(gen uint64) {
	s.mu.Lock()
	fire := gen == s.idleGen && s.watchers == 0 && !s.leaderDone
	s.mu.Unlock()
	if fire {
		s.kill(frame.ReasonIdleTimeout)
	}
}

// attach and detach count open streams; the session is watched while any
// is open.
func (s *Session) attach() {
	s.mu.Lock()
	s.watchers++
	s.disarmIdleLocked()
	s.mu.Unlock()
}

func (s *Session) detach() {
	s.mu.Lock()
	s.watchers--
	killNow := false
	if s.watchers == 0 && !s.leaderDone {
		if s.opts.KillOnDisconnect {
			killNow = true
		} else {
			s.armIdleLocked()
		}
	}
	s.mu.Unlock()
	if killNow {
		s.kill("")
	}
}

// Input copies r to the command's stdin (the terminal with a pty).
func (s *Session) Input(r io.Reader) (int64, error) {
	s.mu.Lock()
	closed, finished := s.stdinClosed, s.finished
	s.mu.Unlock()
	switch {
	case finished:
		return 0, ErrFinished
	case closed || s.proc.Stdin == nil:
		return 0, ErrStdinClosed
	}
	n, err := io.Copy(s.proc.Stdin, r)
	if err != nil {
		return n, fmt.Errorf("write stdin: %w", s.mapClosed(err))
	}
	return n, nil
}

// mapClosed turns errors from writing to a closed stdin into the session's
// sentinel errors.
func (s *Session) mapClosed(err error) error {
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.EIO) {
		return fmt.Errorf("%w: %v", ErrStdinClosed, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return fmt.Errorf("%w: %v", ErrFinished, err)
	}
	if s.stdinClosed {
		return fmt.Errorf("%w: %v", ErrStdinClosed, err)
	}
	return err
}

// CloseStdin closes the command's stdin. With a pty the terminal must stay
// open, so it sends the EOF character (^D) instead.
func (s *Session) CloseStdin() error {
	s.mu.Lock()
	finished, already := s.finished, s.stdinClosed
	if s.proc.PTY == nil {
		s.stdinClosed = true
	}
	s.mu.Unlock()
	switch {
	case finished:
		return ErrFinished
	case s.proc.PTY != nil:
		// Not under s.mu: the write may block while the terminal's input
		// queue is full, and the output pumps need s.mu meanwhile.
		if _, err := s.proc.PTY.Write([]byte{4}); err != nil {
			return fmt.Errorf("send EOF to pty: %w", s.mapClosed(err))
		}
		return nil
	case already:
		return nil
	}
	if err := s.proc.Stdin.Close(); err != nil {
		return fmt.Errorf("close stdin: %w", err)
	}
	return nil
}

// Resize changes the pty's window size.
func (s *Session) Resize(cols, rows uint16) error {
	if s.proc.PTY == nil {
		return ErrNoPTY
	}
	s.mu.Lock()
	finished := s.finished
	s.mu.Unlock()
	if finished {
		return ErrFinished
	}
	if err := pty.Resize(s.proc.PTY, cols, rows); err != nil {
		return s.mapClosed(err)
	}
	return nil
}

// Info is a session's entry in GET /sessions.
type Info struct {
	CommandID string `json:"command_id"`
	Pid       int    `json:"pid"`
	Running   bool   `json:"running"`
	ExitCode  *int   `json:"exit_code"`
}

// Info returns the session's current state.
func (s *Session) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	info := Info{CommandID: s.opts.ID, Pid: s.pid, Running: !s.finished}
	if s.finished {
		code := s.exit.Code
		info.ExitCode = &code
	}
	return info
}
