package files

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"sandbar/agent/internal/apierr"
)

// handler mirrors how the server wires this package.
func handler(w http.ResponseWriter, r *http.Request) {
	path, err := PathFrom(r)
	if err == nil {
		switch r.Method {
		case http.MethodPut:
			var res PutResult
			if res, err = Put(r, path); err == nil {
				apierr.WriteJSON(w, http.StatusOK, res)
			}
		default:
			err = Serve(w, r, path)
		}
	}
	if err != nil {
		apierr.Write(w, err)
	}
}

type fileEnv struct {
	url string
	dir string
}

func newFileEnv(t *testing.T) *fileEnv {
	ts := httptest.NewServer(http.HandlerFunc(handler))
	t.Cleanup(ts.Close)
	return &fileEnv{url: ts.URL, dir: t.TempDir()}
}

func (e *fileEnv) do(t *testing.T, method, path, query, body string, headers map[string]string) (*http.Response, string) {
	t.Helper()
	u := e.url + "/files?path=" + url.QueryEscape(path) + query
	req, err := http.NewRequest(method, u, strings.NewReader(body))
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
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

func wantErr(t *testing.T, resp *http.Response, body string, status int, code string) {
	t.Helper()
	var e struct{ Error, Message string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || resp.StatusCode != status || e.Error != code {
		t.Fatalf("got %d %q, want %d %s", resp.StatusCode, body, status, code)
	}
}

func TestPut(t *testing.T) {
	e := newFileEnv(t)
	tests := []struct {
		name     string
		path     string
		query    string
		body     string
		wantMode os.FileMode
	}{
		{"creates parents, default mode", "a/b/c.txt", "", "hello", 0o644},
		{"explicit mode", "x.sh", "&mode=0755", "#!/bin/sh\n", 0o755},
		{"mode without leading zero", "y", "&mode=600", "", 0o600},
		{"overwrite", "a/b/c.txt", "", "second version", 0o644},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(e.dir, tt.path)
			resp, body := e.do(t, "PUT", p, tt.query, tt.body, nil)
			if resp.StatusCode != 200 || body != fmt.Sprintf("{\"size\":%d}\n", len(tt.body)) {
				t.Fatalf("put: %d %q", resp.StatusCode, body)
			}
			got, err := os.ReadFile(p)
			if err != nil || string(got) != tt.body {
				t.Fatalf("content %q err %v", got, err)
			}
			st, _ := os.Stat(p)
			if st.Mode().Perm() != tt.wantMode {
				t.Fatalf("mode %v, want %v", st.Mode().Perm(), tt.wantMode)
			}
			parent, _ := os.Stat(filepath.Dir(p))
			if parent.Mode().Perm() != 0o755 {
				t.Fatalf("parent mode %v", parent.Mode().Perm())
			}
			leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".sandbar-put-*"))
			if len(leftovers) != 0 {
				t.Fatalf("temporary files left: %v", leftovers)
			}
		})
	}
}

func TestPutErrors(t *testing.T) {
	e := newFileEnv(t)
	file := filepath.Join(e.dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, query string
		status            int
		code              string
	}{
		{"relative path", "rel/path", "", 400, "BadRequest"},
		{"missing path", "", "", 400, "BadRequest"},
		{"bad mode", filepath.Join(e.dir, "m"), "&mode=rwx", 400, "BadRequest"},
		{"mode too large", filepath.Join(e.dir, "m"), "&mode=17777", 400, "BadRequest"},
		{"target is a directory", e.dir, "", 400, "IsADirectory"},
		{"parent is a file", filepath.Join(file, "child"), "", 400, "NotADirectory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do(t, "PUT", tt.path, tt.query, "data", nil)
			wantErr(t, resp, body, tt.status, tt.code)
		})
	}
}

func TestGetAndHead(t *testing.T) {
	e := newFileEnv(t)
	p := filepath.Join(e.dir, "data.txt")
	content := "0123456789"
	if err := os.WriteFile(p, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	etag := fmt.Sprintf(`"%x-%x"`, st.Size(), st.ModTime().UnixNano())

	resp, body := e.do(t, "GET", p, "", "", nil)
	h := resp.Header
	if resp.StatusCode != 200 || body != content {
		t.Fatalf("get %d %q", resp.StatusCode, body)
	}
	checks := map[string]string{
		"Content-Length": "10", "ETag": etag, "X-Sandbar-Mode": "0640", "X-Sandbar-Type": "file",
		"Last-Modified": st.ModTime().UTC().Format(http.TimeFormat), "Accept-Ranges": "bytes",
	}
	for k, want := range checks {
		if h.Get(k) != want {
			t.Fatalf("header %s = %q, want %q", k, h.Get(k), want)
		}
	}
	if !regexp.MustCompile(`^"[0-9a-f]+-[0-9a-f]+"$`).MatchString(h.Get("ETag")) {
		t.Fatalf("etag %q", h.Get("ETag"))
	}

	resp, body = e.do(t, "HEAD", p, "", "", nil)
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("Content-Length") != "10" || resp.Header.Get("ETag") != etag {
		t.Fatalf("head %d %q %v", resp.StatusCode, body, resp.Header)
	}
	resp, _ = e.do(t, "HEAD", e.dir, "", "", nil)
	if resp.StatusCode != 200 || resp.Header.Get("X-Sandbar-Type") != "directory" || resp.Header.Get("X-Sandbar-Mode") == "" {
		t.Fatalf("head dir %d %v", resp.StatusCode, resp.Header)
	}
	resp, body = e.do(t, "GET", e.dir, "", "", nil)
	wantErr(t, resp, body, 400, "IsADirectory")
	resp, body = e.do(t, "GET", filepath.Join(e.dir, "missing"), "", "", nil)
	wantErr(t, resp, body, 404, "FileNotFound")
	resp, body = e.do(t, "HEAD", filepath.Join(e.dir, "missing"), "", "", nil)
	if resp.StatusCode != 404 || body != "" {
		t.Fatalf("head missing %d %q", resp.StatusCode, body)
	}
	resp, body = e.do(t, "GET", filepath.Join(p, "sub"), "", "", nil)
	wantErr(t, resp, body, 400, "NotADirectory")
}

func TestRangesAndConditionals(t *testing.T) {
	e := newFileEnv(t)
	p := filepath.Join(e.dir, "r.bin")
	content := "0123456789"
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(e.dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	etag := ETag(st)
	lastMod := st.ModTime().UTC().Format(http.TimeFormat)
	tests := []struct {
		name         string
		path         string
		headers      map[string]string
		status       int
		body         string
		contentRange string
	}{
		{"first bytes", p, map[string]string{"Range": "bytes=0-3"}, 206, "0123", "bytes 0-3/10"},
		{"open end", p, map[string]string{"Range": "bytes=7-"}, 206, "789", "bytes 7-9/10"},
		{"suffix", p, map[string]string{"Range": "bytes=-2"}, 206, "89", "bytes 8-9/10"},
		{"end clamped", p, map[string]string{"Range": "bytes=8-100"}, 206, "89", "bytes 8-9/10"},
		{"unsatisfiable", p, map[string]string{"Range": "bytes=10-"}, 416, "", "bytes */10"},
		{"multiple ranges ignored", p, map[string]string{"Range": "bytes=0-1,4-5"}, 200, content, ""},
		{"bad syntax ignored", p, map[string]string{"Range": "bytes=x-y"}, 200, content, ""},
		{"empty file ignores range", empty, map[string]string{"Range": "bytes=0-"}, 200, "", ""},
		{"if-range etag match", p, map[string]string{"Range": "bytes=0-0", "If-Range": etag}, 206, "0", "bytes 0-0/10"},
		{"if-range etag mismatch", p, map[string]string{"Range": "bytes=0-0", "If-Range": `"other"`}, 200, content, ""},
		{"if-range weak never matches", p, map[string]string{"Range": "bytes=0-0", "If-Range": "W/" + etag}, 200, content, ""},
		{"if-range date match", p, map[string]string{"Range": "bytes=1-1", "If-Range": lastMod}, 206, "1", "bytes 1-1/10"},
		{"if-none-match hit", p, map[string]string{"If-None-Match": etag}, 304, "", ""},
		{"if-none-match weak hit", p, map[string]string{"If-None-Match": `"a", W/` + etag}, 304, "", ""},
		{"if-none-match star", p, map[string]string{"If-None-Match": "*"}, 304, "", ""},
		{"if-none-match miss", p, map[string]string{"If-None-Match": `"nope"`}, 200, content, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := e.do(t, "GET", tt.path, "", "", tt.headers)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tt.status)
			}
			if got := resp.Header.Get("Content-Range"); got != tt.contentRange {
				t.Fatalf("Content-Range %q, want %q", got, tt.contentRange)
			}
			switch tt.status {
			case 416:
				wantErr(t, resp, body, 416, "BadRequest")
			case 304:
				if body != "" || resp.Header.Get("ETag") != etag {
					t.Fatalf("304 body %q etag %q", body, resp.Header.Get("ETag"))
				}
			default:
				if body != tt.body || resp.Header.Get("Content-Length") != fmt.Sprint(len(tt.body)) {
					t.Fatalf("body %q length %q, want %q", body, resp.Header.Get("Content-Length"), tt.body)
				}
			}
		})
	}
}

func TestLargeFileRoundTrip(t *testing.T) {
	e := newFileEnv(t)
	p := filepath.Join(e.dir, "big")
	data := strings.Repeat("0123456789abcdef", 512<<10) // 8 MiB
	if resp, body := e.do(t, "PUT", p, "", data, nil); resp.StatusCode != 200 {
		t.Fatalf("put %d %s", resp.StatusCode, body)
	}
	resp, body := e.do(t, "GET", p, "", "", map[string]string{"Range": "bytes=8388600-"})
	if resp.StatusCode != 206 || body != "89abcdef" {
		t.Fatalf("range %d %q", resp.StatusCode, body)
	}
	if resp, body = e.do(t, "GET", p, "", "", nil); body != data {
		t.Fatalf("get %d len %d", resp.StatusCode, len(body))
	}
}

func TestFSErrorMapping(t *testing.T) {
	tests := []struct {
		errno  syscall.Errno
		code   string
		status int
	}{
		{syscall.ENOSPC, apierr.NoSpace, 507},
		{syscall.EDQUOT, apierr.NoSpace, 507},
		{syscall.EACCES, apierr.PermissionDenied, 403},
		{syscall.EROFS, apierr.PermissionDenied, 403},
		{syscall.ENOENT, apierr.FileNotFound, 404},
		{syscall.ENOTDIR, apierr.NotADirectory, 400},
		{syscall.EISDIR, apierr.IsADirectory, 400},
		{syscall.EIO, apierr.Internal, 500},
	}
	for _, tt := range tests {
		t.Run(tt.errno.Error(), func(t *testing.T) {
			err := fsError(&os.PathError{Op: "write", Path: "/x", Err: tt.errno})
			e, ok := err.(*apierr.Error)
			if !ok || e.Code != tt.code || e.HTTPStatus() != tt.status || !strings.Contains(e.Message, "/x") {
				t.Fatalf("got %#v", err)
			}
		})
	}
}
