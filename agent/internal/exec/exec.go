// Package exec runs blocking commands for POST /exec.
package exec

import (
	"context"
	"fmt"
	"math"
	"time"

	"sandbar/agent/internal/initproc"
	"sandbar/agent/internal/proc"
)

// DefaultMaxOutput is the per-stream output cap when a request sets none.
const DefaultMaxOutput = 16 << 20

// Request is the body of POST /exec.
type Request struct {
	Command        string            `json:"command"`
	Shell          string            `json:"shell,omitempty"`
	Env            map[string]string `json:"env,omitempty"`
	Cwd            string            `json:"cwd,omitempty"`
	User           string            `json:"user,omitempty"` // "name", "uid", "name:group", "uid:gid"
	TimeoutSeconds float64           `json:"timeout_seconds,omitempty"`
	MaxOutputBytes int64             `json:"max_output_bytes,omitempty"`
}

// Result is the response of POST /exec. Stdout and Stderr hold raw bytes;
// encoding/json replaces invalid UTF-8 by U+FFFD when sending them.
type Result struct {
	Stdout    string `json:"stdout"`
	Stderr    string `json:"stderr"`
	ExitCode  int    `json:"exit_code"`
	TimedOut  bool   `json:"timed_out"`
	Truncated bool   `json:"truncated"`
}

// Runner runs blocking commands.
type Runner struct {
	Config proc.Config
	Reaper *initproc.Reaper
}

// Validate checks the request fields that do not depend on the filesystem.
func (req *Request) Validate() error {
	if req.Command == "" {
		return fmt.Errorf("%w: command is required", proc.ErrInvalid)
	}
	if req.TimeoutSeconds < 0 || math.IsNaN(req.TimeoutSeconds) || req.TimeoutSeconds > math.MaxInt64/float64(time.Second) {
		return fmt.Errorf("%w: timeout_seconds must be >= 0", proc.ErrInvalid)
	}
	if req.MaxOutputBytes < 0 {
		return fmt.Errorf("%w: max_output_bytes must be >= 0", proc.ErrInvalid)
	}
	return nil
}

// Run starts the command, waits for it (and its output) and returns the
// result. If ctx ends first (the HTTP client went away) the process group is
// killed and ctx's error returned.
func (r *Runner) Run(ctx context.Context, req Request) (Result, error) {
	if err := req.Validate(); err != nil {
		return Result{}, err
	}
	prepared, err := r.Config.Prepare(proc.Spec{Command: req.Command, Shell: req.Shell, Env: req.Env, Cwd: req.Cwd, User: req.User})
	if err != nil {
		return Result{}, fmt.Errorf("exec: %w", err)
	}
	p, err := proc.Start(r.Reaper, prepared, proc.Options{})
	if err != nil {
		return Result{}, fmt.Errorf("exec: %w", err)
	}
	limit := req.MaxOutputBytes
	if limit == 0 {
		limit = DefaultMaxOutput
	}
	stdout, stderr := &capped{max: limit}, &capped{max: limit}
	outPump, errPump := proc.NewPump(p.Stdout, stdout.write), proc.NewPump(p.Stderr, stderr.write)

	var timeout <-chan time.Time
	if req.TimeoutSeconds > 0 {
		t := time.NewTimer(time.Duration(req.TimeoutSeconds * float64(time.Second)))
		defer t.Stop()
		timeout = t.C
	}
	var res Result
	select {
	case ws := <-p.Done:
		res.ExitCode = proc.StatusOf(ws).Code
	case <-timeout:
		proc.KillGroup(p.Pid)
		ws := <-p.Done
		st := proc.StatusOf(ws)
		res.ExitCode = st.Code
		// The leader may have exited on its own in the same instant; then
		// it did not time out. Killed by the signal, its code is -1.
		res.TimedOut = st.Signal != 0
	case <-ctx.Done():
		proc.KillGroup(p.Pid)
		<-p.Done
		proc.Finish(proc.ExitGrace, outPump, errPump)
		return Result{}, fmt.Errorf("exec: client gone: %w", ctx.Err())
	}
	proc.Finish(proc.ExitGrace, outPump, errPump)
	res.Stdout, res.Stderr = stdout.String(), stderr.String()
	res.Truncated = stdout.truncated || stderr.truncated
	return res, nil
}

// capped keeps the first max bytes written to it and notes whether more came.
type capped struct {
	buf       []byte
	max       int64
	truncated bool
}

func (c *capped) write(p []byte) {
	room := c.max - int64(len(c.buf))
	if int64(len(p)) > room {
		c.truncated = true
		p = p[:room]
	}
	c.buf = append(c.buf, p...)
}

// String returns the kept bytes plus the truncation marker if needed.
func (c *capped) String() string {
	if !c.truncated {
		return string(c.buf)
	}
	return string(c.buf) + TruncationMarker(c.max)
}

// TruncationMarker is appended to a stream cut after n bytes.
func TruncationMarker(n int64) string {
	return fmt.Sprintf("\n[sandbar: output truncated after %d bytes]\n", n)
}
