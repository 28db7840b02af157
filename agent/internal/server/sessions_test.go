package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"sandbar/agent/internal/frame"
)

type obj = map[string]interface{}

func TestSessionGetOrCreate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	first := e.createSession(t, obj{"command_id": "goc", "command": "sleep 100"})
	defer e.do(t, "POST", "/sessions/goc/kill", nil)
	if !first.Created {
		t.Fatal("first create not created")
	}
	second := e.createSession(t, obj{"command_id": "goc", "command": "echo other"})
	if second.Created || second.Pid != first.Pid {
		t.Fatalf("second create %+v, first %+v", second, first)
	}
}

func TestSessionCreateWithStream(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	post := func(body obj) *http.Response {
		j, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", e.url+"/sessions", bytes.NewReader(j))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	// One request: created, stdin closed (cat ends at once), streamed to the exit frame.
	resp := post(obj{"command_id": "one", "command": "cat; echo done; echo e >&2", "close_stdin": true, "stream": true})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/octet-stream" || resp.Header.Get("X-Sandbar-Created") != "true" || resp.Header.Get("X-Sandbar-Pid") == "" {
		t.Fatalf("create+stream: %d %v", resp.StatusCode, resp.Header)
	}
	res := readStream(t, resp)
	if string(res.stdout) != "done\n" || string(res.stderr) != "e\n" || res.exit.ExitCode() != 0 {
		t.Fatalf("stdout %q stderr %q exit %d", res.stdout, res.stderr, res.exit.ExitCode())
	}
	// The same id again: not created (no second process), the output replayed from 0.
	again := post(obj{"command_id": "one", "command": "echo other", "close_stdin": true, "stream": true})
	if again.Header.Get("X-Sandbar-Created") != "false" {
		t.Fatalf("second create: %v", again.Header)
	}
	if res := readStream(t, again); string(res.stdout) != "done\n" {
		t.Fatalf("replay stdout %q", res.stdout)
	}
	// Without close_stdin the command keeps its stdin until told otherwise.
	open := post(obj{"command_id": "two", "command": "cat", "stream": true})
	e.do(t, "POST", "/sessions/two/input", "typed\n")
	e.do(t, "POST", "/sessions/two/close-stdin", nil)
	if res := readStream(t, open); string(res.stdout) != "typed\n" {
		t.Fatalf("stdin kept: stdout %q", res.stdout)
	}
	// Errors are JSON as usual.
	bad := post(obj{"command_id": "three", "command": "true", "cwd": "/nonexistent", "stream": true})
	data, _ := io.ReadAll(bad.Body)
	bad.Body.Close()
	wantError(t, bad, data, 400, "BadRequest")
}

func TestSessionOutputOffsetsAndReconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.createSession(t, obj{"command_id": "offs", "command": "printf 'hello world'; printf 'warn' >&2; exit 3"})
	all := e.streamAll(t, "offs", 0, 0)
	if string(all.stdout) != "hello world" || string(all.stderr) != "warn" {
		t.Fatalf("stdout %q stderr %q", all.stdout, all.stderr)
	}
	if all.exit.ExitCode() != 3 || all.info.Reason != frame.ReasonExited || all.info.Signal != 0 {
		t.Fatalf("exit %d %+v", all.exit.ExitCode(), all.info)
	}
	// Reconnect from offsets: only the rest is sent, with absolute offsets.
	again := e.streamAll(t, "offs", 6, 4)
	if string(again.stdout) != "world" || len(again.stderr) != 0 {
		t.Fatalf("reconnect stdout %q stderr %q", again.stdout, again.stderr)
	}
	for _, f := range again.frames {
		if f.Type == frame.TypeStdout && f.A != 6 {
			t.Fatalf("reconnect frame offset %d, want 6", f.A)
		}
	}
	if again.exit.ExitCode() != 3 {
		t.Fatalf("reconnect exit %d", again.exit.ExitCode())
	}
}

func TestSessionRingOverflowSkips(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 1024)
	e.createSession(t, obj{"command_id": "big", "command": "head -c 5000 /dev/zero | tr '\\0' a; printf END"})
	e.waitFinished(t, "big", 5*time.Second)
	res := e.streamAll(t, "big", 0, 0)
	first := res.frames[1]
	if first.Type != frame.TypeStdout || first.A != 5003-1024 {
		t.Fatalf("first output frame type %d offset %d, want offset %d", first.Type, first.A, 5003-1024)
	}
	if len(res.stdout) != 1024 || !strings.HasSuffix(string(res.stdout), "aaaEND") {
		t.Fatalf("stdout len %d", len(res.stdout))
	}
}

func TestSessionStdin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.createSession(t, obj{"command_id": "cat", "command": "tr a-z A-Z"})
	resp, data := e.do(t, "POST", "/sessions/cat/input", "hello ")
	if resp.StatusCode != 200 || !strings.Contains(string(data), `"bytes":6`) {
		t.Fatalf("input: %d %s", resp.StatusCode, data)
	}
	e.do(t, "POST", "/sessions/cat/input", []byte("world\n"))
	if resp, data := e.do(t, "POST", "/sessions/cat/close-stdin", nil); resp.StatusCode != 200 {
		t.Fatalf("close-stdin: %d %s", resp.StatusCode, data)
	}
	res := e.streamAll(t, "cat", 0, 0)
	if string(res.stdout) != "HELLO WORLD\n" || res.exit.ExitCode() != 0 {
		t.Fatalf("stdout %q exit %d", res.stdout, res.exit.ExitCode())
	}
	resp, data = e.do(t, "POST", "/sessions/cat/input", "late")
	wantError(t, resp, data, 409, "Conflict")
	resp, data = e.do(t, "POST", "/sessions/cat/resize", obj{"cols": 10, "rows": 10})
	wantError(t, resp, data, 409, "Conflict")
}

func TestSessionKill(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.createSession(t, obj{"command_id": "k", "command": "echo up; sleep 100"})
	if resp, data := e.do(t, "POST", "/sessions/k/kill", nil); resp.StatusCode != 200 {
		t.Fatalf("kill: %d %s", resp.StatusCode, data)
	}
	res := e.streamAll(t, "k", 0, 0)
	if res.exit.ExitCode() != -1 || res.info.Reason != frame.ReasonKilled || res.info.Signal != 9 {
		t.Fatalf("exit %d %+v", res.exit.ExitCode(), res.info)
	}
	info := e.waitFinished(t, "k", time.Second)
	if info.ExitCode == nil || *info.ExitCode != -1 {
		t.Fatalf("list entry %+v", info)
	}
}

func TestSessionTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.createSession(t, obj{"command_id": "to", "command": "sleep 100", "timeout_seconds": 0.2})
	res := e.streamAll(t, "to", 0, 0)
	n := len(res.frames)
	if n < 3 || res.frames[n-2].Type != frame.TypeError {
		t.Fatalf("frames %v", res.frames)
	}
	var fe frame.ErrorInfo
	decode(t, res.frames[n-2].Payload, &fe)
	if fe.Error != frame.ErrCommandTimeout || res.info.Reason != frame.ReasonTimeout || res.exit.ExitCode() != -1 {
		t.Fatalf("error %+v exit %+v", fe, res.info)
	}
}

func TestSessionIdleTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	// Never watched: the idle timeout counts from creation.
	e.createSession(t, obj{"command_id": "idle", "command": "sleep 100", "idle_timeout_seconds": 0.2})
	e.waitFinished(t, "idle", 3*time.Second)
	if res := e.streamAll(t, "idle", 0, 0); res.info.Reason != frame.ReasonIdleTimeout {
		t.Fatalf("exit %+v", res.info)
	}

	// Watched: no idle kill while a stream is open; it counts from the
	// moment the last reader disconnects.
	e.createSession(t, obj{"command_id": "watched", "command": "sleep 100", "idle_timeout_seconds": 0.3})
	ctx, cancel := context.WithCancel(context.Background())
	resp := e.openStream(t, ctx, "watched", 0, 0)
	time.Sleep(700 * time.Millisecond)
	if info := e.sessionInfo(t, "watched"); !info.Running {
		t.Fatal("watched session was killed as idle")
	}
	cancel()
	resp.Body.Close()
	disconnected := time.Now()
	e.waitFinished(t, "watched", 3*time.Second)
	if d := time.Since(disconnected); d < 250*time.Millisecond {
		t.Fatalf("killed %v after disconnect, before the idle timeout", d)
	}
	if res := e.streamAll(t, "watched", 0, 0); res.info.Reason != frame.ReasonIdleTimeout {
		t.Fatalf("exit %+v", res.info)
	}
}

func TestSessionKillOnDisconnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.createSession(t, obj{"command_id": "kod", "command": "sleep 100", "kill_on_disconnect": true})
	ctx, cancel := context.WithCancel(context.Background())
	resp := e.openStream(t, ctx, "kod", 0, 0)
	if f, err := frame.Read(resp.Body); err != nil || f.Type != frame.TypeStarted {
		t.Fatalf("first frame %v %v", f, err)
	}
	time.Sleep(100 * time.Millisecond)
	if info := e.sessionInfo(t, "kod"); !info.Running {
		t.Fatal("killed while watched")
	}
	cancel()
	resp.Body.Close()
	e.waitFinished(t, "kod", 3*time.Second)
	if res := e.streamAll(t, "kod", 0, 0); res.info.Reason != frame.ReasonKilled {
		t.Fatalf("exit %+v", res.info)
	}
}

func TestSessionTTLExpiryAndNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	resp, data := e.do(t, "GET", "/sessions/nope/stream", nil)
	wantError(t, resp, data, 404, "CommandNotFound")
	resp, data = e.do(t, "POST", "/sessions/nope/kill", nil)
	wantError(t, resp, data, 404, "CommandNotFound")

	e.createSession(t, obj{"command_id": "ttl", "command": "echo bye", "ttl_seconds": 0.3})
	e.waitFinished(t, "ttl", 3*time.Second)
	if res := e.streamAll(t, "ttl", 0, 0); string(res.stdout) != "bye\n" {
		t.Fatalf("within ttl: stdout %q", res.stdout)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		resp, data = e.do(t, "GET", "/sessions/ttl/stream", nil)
		if resp.StatusCode == http.StatusGone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d after ttl: %s", resp.StatusCode, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wantError(t, resp, data, 410, "SessionExpired")
	resp, data = e.do(t, "POST", "/sessions", obj{"command_id": "ttl", "command": "true"})
	wantError(t, resp, data, 410, "SessionExpired")
	if info := e.sessionInfo(t, "ttl"); info.CommandID != "" {
		t.Fatalf("expired session still listed: %+v", info)
	}
}

func TestSessionPTY(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	// tty names the terminal; stderr is merged; the size follows resize.
	e.createSession(t, obj{"command_id": "pty", "pty": true, "cols": 90, "rows": 20,
		"command": "tty; echo to-stderr >&2; stty size; read line; stty size; echo \"got $line\""})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := e.openStream(t, ctx, "pty", 0, 0)
	defer resp.Body.Close()
	var out []byte
	sentInput := false
	for {
		f, err := frame.Read(resp.Body)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read: %v (output %q)", err, out)
		}
		if f.Type == frame.TypeStderr {
			t.Fatalf("pty session sent a stderr frame %q", f.Payload)
		}
		if f.Type == frame.TypeStdout {
			out = append(out, f.Payload...)
		}
		if !sentInput && strings.Contains(string(out), "20 90") {
			sentInput = true
			if r, d := e.do(t, "POST", "/sessions/pty/resize", obj{"cols": 120, "rows": 40}); r.StatusCode != 200 {
				t.Fatalf("resize %d %s", r.StatusCode, d)
			}
			e.do(t, "POST", "/sessions/pty/input", "ping\n")
		}
	}
	text := string(out)
	if !regexp.MustCompile(`^/dev/pts/\d+\r\n`).MatchString(text) {
		t.Fatalf("tty output %q", text)
	}
	for _, want := range []string{"to-stderr\r\n", "20 90\r\n", "40 120\r\n", "got ping\r\n"} {
		if !strings.Contains(text, want) {
			t.Fatalf("output %q lacks %q", text, want)
		}
	}
}

func TestSessionList(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.createSession(t, obj{"command_id": "l1", "command": "exit 5"})
	e.createSession(t, obj{"command_id": "l2", "command": "sleep 100"})
	defer e.do(t, "POST", "/sessions/l2/kill", nil)
	done := e.waitFinished(t, "l1", 3*time.Second)
	if done.ExitCode == nil || *done.ExitCode != 5 {
		t.Fatalf("l1 %+v", done)
	}
	_, data := e.do(t, "GET", "/sessions", nil)
	if !strings.Contains(string(data), `{"command_id":"l2","pid":`) ||
		!strings.Contains(string(data), `"running":true,"exit_code":null}`) {
		t.Fatalf("list %s", data)
	}
}

func TestSessionBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	e.createSession(t, obj{"command_id": "br", "command": "sleep 100"})
	defer e.do(t, "POST", "/sessions/br/kill", nil)
	tests := []struct {
		method, path string
		body         interface{}
	}{
		{"POST", "/sessions", obj{"command": "true"}},
		{"POST", "/sessions", obj{"command_id": "x", "command": "true", "idle_timeout_seconds": -3}},
		{"GET", "/sessions/br/stream?stdout_offset=-1", nil},
		{"POST", "/sessions/br/resize", obj{"cols": 0, "rows": 10}},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			resp, data := e.do(t, tt.method, tt.path, tt.body)
			wantError(t, resp, data, 400, "BadRequest")
		})
	}
	resp, data := e.do(t, "POST", "/sessions/br/resize", obj{"cols": 10, "rows": 10})
	wantError(t, resp, data, 409, "Conflict") // no pty
}
