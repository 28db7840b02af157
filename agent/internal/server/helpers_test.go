package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"sandbar/agent/internal/exec"
	"sandbar/agent/internal/frame"
	"sandbar/agent/internal/initproc"
	"sandbar/agent/internal/proc"
	"sandbar/agent/internal/session"
)

const testToken = "s3cret-token"

type testEnv struct {
	url string
	dir string
}

// newEnv starts an agent server on an httptest server. ringBytes 0 means
// the default ring size.
func newEnv(t *testing.T, ringBytes int) *testEnv {
	t.Helper()
	return newEnvWith(t, ringBytes, nil)
}

// newEnvWith is newEnv with a hook to adjust the command configuration.
func newEnvWith(t *testing.T, ringBytes int, adjust func(*proc.Config)) *testEnv {
	t.Helper()
	dir := t.TempDir()
	procCfg := proc.Config{BaseEnv: []string{"PATH=/usr/bin:/bin", "IMAGE_VAR=image"}, DefaultCwd: dir}
	if adjust != nil {
		adjust(&procCfg)
	}
	reaper := initproc.Default()
	h := New(Config{
		Token:    testToken,
		Exec:     &exec.Runner{Config: procCfg, Reaper: reaper},
		Sessions: session.NewManager(session.Config{Proc: procCfg, Reaper: reaper, RingBytes: ringBytes}),
	})
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ErrorLog = NewHTTPServer(h).ErrorLog
	ts.Start()
	t.Cleanup(ts.Close)
	return &testEnv{url: ts.URL, dir: dir}
}

// do sends a request with the test token; body may be nil, []byte, string
// or a value to encode as JSON.
func (e *testEnv) do(t *testing.T, method, path string, body interface{}) (*http.Response, []byte) {
	t.Helper()
	return e.doWith(t, method, path, body, map[string]string{"Authorization": "Bearer " + testToken})
}

func (e *testEnv) doWith(t *testing.T, method, path string, body interface{}, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, data
}

// decode unmarshals data into v or fails.
func decode(t *testing.T, data []byte, v interface{}) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
}

// wantError checks a JSON error response.
func wantError(t *testing.T, resp *http.Response, data []byte, status int, code string) {
	t.Helper()
	var e struct{ Error, Message string }
	decode(t, data, &e)
	if resp.StatusCode != status || e.Error != code || e.Message == "" {
		t.Fatalf("got %d %s, want %d %s", resp.StatusCode, data, status, code)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error content type %q", ct)
	}
}

// createSession posts to /sessions and returns the response.
func (e *testEnv) createSession(t *testing.T, req map[string]interface{}) createResponse {
	t.Helper()
	resp, data := e.do(t, "POST", "/sessions", req)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create: %d %s", resp.StatusCode, data)
	}
	var cr createResponse
	decode(t, data, &cr)
	if cr.CommandID != req["command_id"] || cr.Pid <= 0 {
		t.Fatalf("create response %+v", cr)
	}
	return cr
}

// streamResult is everything one stream connection delivered.
type streamResult struct {
	frames []frame.Frame
	stdout []byte
	stderr []byte
	exit   *frame.Frame
	info   frame.ExitInfo
}

// openStream connects to a session's stream; the caller reads frames.
func (e *testEnv) openStream(t *testing.T, ctx context.Context, id string, outOff, errOff uint64) *http.Response {
	t.Helper()
	url := fmt.Sprintf("%s/sessions/%s/stream?stdout_offset=%d&stderr_offset=%d", e.url, id, outOff, errOff)
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("stream %s: %d %s", id, resp.StatusCode, data)
	}
	return resp
}

// streamAll reads a whole stream (until the exit frame and end of body).
func (e *testEnv) streamAll(t *testing.T, id string, outOff, errOff uint64) streamResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := e.openStream(t, ctx, id, outOff, errOff)
	return readStream(t, resp)
}

// readStream reads a whole stream response (until the exit frame and end of
// body) and closes it.
func readStream(t *testing.T, resp *http.Response) streamResult {
	t.Helper()
	defer resp.Body.Close()
	var res streamResult
	for {
		f, err := frame.Read(resp.Body)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read frame: %v (so far %d frames)", err, len(res.frames))
		}
		res.frames = append(res.frames, f)
		switch f.Type {
		case frame.TypeStdout:
			res.stdout = append(res.stdout, f.Payload...)
		case frame.TypeStderr:
			res.stderr = append(res.stderr, f.Payload...)
		case frame.TypeExit:
			f := f
			res.exit = &f
			decode(t, f.Payload, &res.info)
		}
	}
	if len(res.frames) == 0 || res.frames[0].Type != frame.TypeStarted {
		t.Fatalf("stream did not start with a started frame: %v", res.frames)
	}
	if res.exit == nil || res.frames[len(res.frames)-1].Type != frame.TypeExit {
		t.Fatalf("stream did not end with an exit frame: %v", res.frames)
	}
	return res
}

// waitFinished polls GET /sessions until id is no longer running.
func (e *testEnv) waitFinished(t *testing.T, id string, within time.Duration) session.Info {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, data := e.do(t, "GET", "/sessions", nil)
		var list struct{ Sessions []session.Info }
		decode(t, data, &list)
		for _, s := range list.Sessions {
			if s.CommandID == id && !s.Running {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("session %s still running after %v: %s", id, within, data)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sessionInfo returns id's entry in GET /sessions (zero if absent).
func (e *testEnv) sessionInfo(t *testing.T, id string) session.Info {
	t.Helper()
	_, data := e.do(t, "GET", "/sessions", nil)
	var list struct{ Sessions []session.Info }
	decode(t, data, &list)
	for _, s := range list.Sessions {
		if s.CommandID == id {
			return s
		}
	}
	return session.Info{}
}
