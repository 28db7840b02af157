package server

import (
	"net/http"
	"strings"
	"testing"

	"sandbar/agent/internal/exec"
)

func TestAuth(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name   string
		method string
		path   string
		header string
		status int
	}{
		{"healthz needs no token", "GET", "/healthz", "", 200},
		{"missing token", "GET", "/sessions", "", 401},
		{"wrong token", "GET", "/sessions", "Bearer nope", 401},
		{"token prefix", "GET", "/sessions", "Bearer " + testToken[:4], 401},
		{"token with suffix", "GET", "/sessions", "Bearer " + testToken + "x", 401},
		{"wrong scheme", "GET", "/sessions", "Basic " + testToken, 401},
		{"right token", "GET", "/sessions", "Bearer " + testToken, 200},
		{"scheme case-insensitive", "GET", "/sessions", "bearer " + testToken, 200},
		{"non-GET healthz needs token", "POST", "/healthz", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.header != "" {
				h["Authorization"] = tt.header
			}
			resp, data := e.doWith(t, tt.method, tt.path, nil, h)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, data, tt.status)
			}
			if tt.status == 401 {
				wantError(t, resp, data, 401, "Unauthorized")
			}
		})
	}
}

func TestEmptyTokenRejectsEverything(t *testing.T) {
	s := New(Config{})
	req, _ := http.NewRequest("GET", "/sessions", nil)
	req.Header.Set("Authorization", "Bearer ")
	if s.authorized(req) {
		t.Fatal("empty configured token must not authorize")
	}
}

func TestHealthzAndRouting(t *testing.T) {
	e := newEnv(t, 0)
	resp, data := e.doWith(t, "GET", "/healthz", nil, nil)
	var h struct {
		OK      bool
		Version string
	}
	decode(t, data, &h)
	if resp.StatusCode != 200 || !h.OK || h.Version == "" {
		t.Fatalf("healthz %d %s", resp.StatusCode, data)
	}
	tests := []struct {
		method, path string
		status       int
	}{
		{"GET", "/nope", 404},
		{"GET", "/exec", 405},
		{"DELETE", "/files?path=/tmp/x", 405},
		{"GET", "/sessions/x/kill", 405},
		{"POST", "/sessions/x/bogus", 404},
		{"POST", "/sessions/x", 404},
	}
	for _, tt := range tests {
		resp, data := e.do(t, tt.method, tt.path, nil)
		wantError(t, resp, data, tt.status, "BadRequest")
	}
}

func TestExecHTTP(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name string
		body interface{}
		want exec.Result
	}{
		{"basic", map[string]interface{}{"command": "echo hi; echo oops >&2; exit 2"},
			exec.Result{Stdout: "hi\n", Stderr: "oops\n", ExitCode: 2}},
		{"image env and request env", map[string]interface{}{"command": `echo "$IMAGE_VAR-$X"`, "env": map[string]string{"X": "y"}},
			exec.Result{Stdout: "image-y\n"}},
		{"default cwd", map[string]interface{}{"command": "pwd"}, exec.Result{Stdout: e.dir + "\n"}},
		{"timeout", map[string]interface{}{"command": "sleep 100", "timeout_seconds": 0.2},
			exec.Result{ExitCode: -1, TimedOut: true}},
		{"invalid utf-8 becomes U+FFFD", map[string]interface{}{"command": `printf 'a\377b'`},
			exec.Result{Stdout: "a\ufffdb"}},
		{"truncation marker", map[string]interface{}{"command": "printf abcdef", "max_output_bytes": 3},
			exec.Result{Stdout: "abc\n[sandbar: output truncated after 3 bytes]\n", Truncated: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := e.do(t, "POST", "/exec", tt.body)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, data)
			}
			var got exec.Result
			decode(t, data, &got)
			if got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestExecHTTPErrors(t *testing.T) {
	e := newEnv(t, 0)
	tests := []struct {
		name string
		body interface{}
	}{
		{"not json", "{"},
		{"empty body", nil},
		{"trailing data", `{"command":"true"} {}`},
		{"no command", map[string]interface{}{}},
		{"missing cwd", map[string]interface{}{"command": "true", "cwd": "/no/such/dir"}},
		{"negative timeout", map[string]interface{}{"command": "true", "timeout_seconds": -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := e.do(t, "POST", "/exec", tt.body)
			wantError(t, resp, data, 400, "BadRequest")
			if tt.name == "missing cwd" && !strings.Contains(string(data), "/no/such/dir") {
				t.Fatalf("message lacks the path: %s", data)
			}
		})
	}
}
