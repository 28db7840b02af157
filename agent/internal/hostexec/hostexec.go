// Package hostexec is the server's host-side process launcher: `sandbar-agent
// host-exec` reads one JSON request per line on stdin, runs each program
// concurrently and writes one JSON response per line on stdout.
//
// The server (Node.js) would otherwise fork itself for every host command
// (mount, ip, nft, runsc); fork copies the page tables of its whole heap, which
// costs milliseconds per command. This process is small and starts programs
// with vfork, so a command costs little more than the program itself.
//
// It runs on the host as the server's child, never inside a sandbox.
package hostexec

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Request is one program to run.
type Request struct {
	ID   int64    `json:"id"`
	Argv []string `json:"argv"`
	// Input is written to the program's stdin, which is then closed; without
	// it stdin is /dev/null.
	Input []byte `json:"input,omitempty"`
	Cwd   string `json:"cwd,omitempty"`
	// Env replaces this process's environment when not nil.
	Env       []string `json:"env,omitempty"`
	TimeoutMs int64    `json:"timeout_ms,omitempty"`
	// Detached starts the program in a session of its own (setsid).
	Detached bool `json:"detached,omitempty"`
	// LogFile, when set, receives stdout and stderr (opened for appending)
	// instead of the response.
	LogFile string `json:"log_file,omitempty"`
}

// Response is the outcome of one Request.
type Response struct {
	ID int64 `json:"id"`
	// Code is the exit code; 128 when a signal ended the program (Signal set).
	Code   int    `json:"code"`
	Signal string `json:"signal,omitempty"`
	Stdout []byte `json:"stdout,omitempty"`
	Stderr []byte `json:"stderr,omitempty"`
	// Error is set when the program could not be started; Errno is its
	// errno name (ENOENT, EACCES, ...) when known.
	Error string `json:"error,omitempty"`
	Errno string `json:"errno,omitempty"`
}

// Serve handles requests from in until it ends, writing responses to out.
// Requests run concurrently; responses come in completion order. At the end
// of in it waits for the requests still running.
func Serve(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReaderSize(in, 64<<10))
	var mu sync.Mutex
	var running sync.WaitGroup
	defer running.Wait()
	w := bufio.NewWriterSize(out, 64<<10)
	enc := json.NewEncoder(w)
	for {
		var req Request
		if err := dec.Decode(&req); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		running.Add(1)
		go func() {
			defer running.Done()
			resp := Run(req)
			mu.Lock()
			defer mu.Unlock()
			if err := enc.Encode(resp); err == nil {
				_ = w.Flush()
			}
		}()
	}
}

// Run runs one request to completion.
func Run(req Request) Response {
	resp := Response{ID: req.ID}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		resp.Error, resp.Errno = "empty argv", "EINVAL"
		return resp
	}
	cmd := exec.Command(req.Argv[0], req.Argv[1:]...)
	cmd.Dir = req.Cwd
	cmd.Env = req.Env
	if req.Input != nil {
		cmd.Stdin = bytes.NewReader(req.Input)
	}
	var stdout, stderr bytes.Buffer
	if req.LogFile != "" {
		f, err := os.OpenFile(req.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			resp.Error, resp.Errno = err.Error(), errnoName(err)
			return resp
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
	}
	if req.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		resp.Error, resp.Errno = err.Error(), errnoName(err)
		return resp
	}
	if req.TimeoutMs > 0 {
		t := time.AfterFunc(time.Duration(req.TimeoutMs)*time.Millisecond, func() { _ = cmd.Process.Kill() })
		defer t.Stop()
	}
	err := cmd.Wait()
	resp.Stdout, resp.Stderr = stdout.Bytes(), stderr.Bytes()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			resp.Code, resp.Signal = 128, ws.Signal().String()
		} else {
			resp.Code = exitErr.ExitCode()
		}
	default:
		// Waiting or copying output failed; report what the program did.
		resp.Code = cmd.ProcessState.ExitCode()
		resp.Stderr = append(resp.Stderr, []byte("\n"+err.Error())...)
	}
	return resp
}

// errnoName returns the errno behind err as Node names it (ENOENT, ...).
func errnoName(err error) string {
	var errno syscall.Errno
	switch {
	case errors.Is(err, exec.ErrNotFound):
		return "ENOENT"
	case errors.As(err, &errno):
		return errnoNames[errno]
	}
	return ""
}

var errnoNames = map[syscall.Errno]string{
	syscall.ENOENT:  "ENOENT",
	syscall.EACCES:  "EACCES",
	syscall.EPERM:   "EPERM",
	syscall.ENOEXEC: "ENOEXEC",
	syscall.ENOTDIR: "ENOTDIR",
	syscall.EISDIR:  "EISDIR",
	syscall.E2BIG:   "E2BIG",
	syscall.ENOMEM:  "ENOMEM",
	syscall.EAGAIN:  "EAGAIN",
}
