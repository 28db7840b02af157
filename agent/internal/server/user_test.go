package server

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"sandbar/agent/internal/exec"
	"sandbar/agent/internal/proc"
	"sandbar/agent/internal/users"
)

// userDB writes a passwd and group file for the user tests.
func userDB(t *testing.T) users.DB {
	t.Helper()
	dir := t.TempDir()
	db := users.DB{PasswdPath: filepath.Join(dir, "passwd"), GroupPath: filepath.Join(dir, "group")}
	passwd := "# test users\nroot:x:0:0:root:/root:/bin/bash\napp:x:4100:4200:App:/home/app:/bin/sh\n"
	group := "root:x:0:\napp:x:4200:\nextra:x:4300:app\n"
	if err := os.WriteFile(db.PasswdPath, []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db.GroupPath, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	return db
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
}

// idScript prints what the user tests compare.
const idScript = `echo "$(id -u) $(id -g) [$(id -G)] $HOME ${USER-unset}"`

func TestExecAsUser(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	e := newEnvWith(t, 0, func(c *proc.Config) { c.Users = userDB(t) })
	tests := []struct{ user, want string }{
		{"app", "4100 4200 [4200 4300] /home/app app\n"},
		{"4100", "4100 4200 [4200 4300] /home/app app\n"},
		{"app:extra", "4100 4300 [4300] /home/app app\n"},
		{"app:4444", "4100 4444 [4444] /home/app app\n"},
		{"4242", "4242 0 [0] / unset\n"},
		{"4242:4343", "4242 4343 [4343] / unset\n"},
		{"4242:extra", "4242 4300 [4300] / unset\n"},
		{"root", "0 0 [0] /root root\n"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			// The default cwd is a 0700 test directory: run in /.
			resp, data := e.do(t, "POST", "/exec", obj{"command": idScript, "user": tt.user, "cwd": "/"})
			if resp.StatusCode != 200 {
				t.Fatalf("status %d %s", resp.StatusCode, data)
			}
			var got exec.Result
			decode(t, data, &got)
			if got.Stdout != tt.want || got.ExitCode != 0 {
				t.Fatalf("got %+v, want stdout %q", got, tt.want)
			}
		})
	}
	// The request's env wins over the user's HOME and USER.
	resp, data := e.do(t, "POST", "/exec", obj{"command": idScript, "user": "app", "cwd": "/",
		"env": map[string]string{"HOME": "/srv", "USER": "svc"}})
	var got exec.Result
	decode(t, data, &got)
	if resp.StatusCode != 200 || got.Stdout != "4100 4200 [4200 4300] /srv svc\n" {
		t.Fatalf("env override: %d %s", resp.StatusCode, data)
	}
	// A directory the user may not enter is the request's fault.
	resp, data = e.do(t, "POST", "/exec", obj{"command": "true", "user": "app"})
	wantError(t, resp, data, 400, "BadRequest")
}

func TestUserNotFound(t *testing.T) {
	t.Parallel()
	// The system's own /etc/passwd, for the exact message.
	sys := newEnv(t, 0)
	for _, path := range []string{"/exec", "/sessions"} {
		resp, data := sys.do(t, "POST", path, obj{"command_id": "nf", "command": "true", "user": "nobodyx"})
		wantError(t, resp, data, 400, "UserNotFound")
		var body struct{ Message string }
		decode(t, data, &body)
		if body.Message != "user 'nobodyx' not found in /etc/passwd" {
			t.Fatalf("%s: message %q", path, body.Message)
		}
	}
	if info := sys.sessionInfo(t, "nf"); info.CommandID != "" {
		t.Fatalf("a session was created for an unknown user: %+v", info)
	}

	db := userDB(t)
	e := newEnvWith(t, 0, func(c *proc.Config) { c.Users = db })
	tests := []struct {
		user, code, message string
	}{
		{"nobodyx", "UserNotFound", "user 'nobodyx' not found in " + db.PasswdPath},
		{"app:nogroupx", "UserNotFound", "group 'nogroupx' not found in " + db.GroupPath},
		{"a:b:c", "BadRequest", ""},
		{"app:", "BadRequest", ""},
		{"99999999999", "BadRequest", ""},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			resp, data := e.do(t, "POST", "/exec", obj{"command": "true", "user": tt.user})
			wantError(t, resp, data, 400, tt.code)
			if tt.message != "" && !strings.Contains(string(data), `"message":"`+tt.message+`"`) {
				t.Fatalf("body %s, want message %q", data, tt.message)
			}
		})
	}

	// A default user that does not resolve fails the commands that use it
	// and says where it came from; an explicit user still works.
	bad := newEnvWith(t, 0, func(c *proc.Config) { c.Users = db; c.DefaultUser = "ghost" })
	resp, data := bad.do(t, "POST", "/exec", obj{"command": "true"})
	wantError(t, resp, data, 400, "UserNotFound")
	if !strings.Contains(string(data), "SANDBAR_AGENT_USER") {
		t.Fatalf("body %s does not name the default", data)
	}
	if resp, data := bad.do(t, "POST", "/exec", obj{"command": "true", "user": "root"}); resp.StatusCode != 200 {
		t.Fatalf("explicit root with a bad default: %d %s", resp.StatusCode, data)
	}
}

func TestDefaultUser(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	e := newEnvWith(t, 0, func(c *proc.Config) {
		c.Users = userDB(t)
		c.DefaultUser = "app"
		c.DefaultCwd = "/"
	})
	tests := []struct {
		user interface{}
		want string
	}{
		{nil, "4100 4200 [4200 4300] /home/app app\n"},
		{"", "4100 4200 [4200 4300] /home/app app\n"},
		{"root", "0 0 [0] /root root\n"},
		{"0", "0 0 [0] /root root\n"},
		{"4242", "4242 0 [0] / unset\n"},
	}
	for _, tt := range tests {
		body := obj{"command": idScript}
		if tt.user != nil {
			body["user"] = tt.user
		}
		resp, data := e.do(t, "POST", "/exec", body)
		var got exec.Result
		decode(t, data, &got)
		if resp.StatusCode != 200 || got.Stdout != tt.want {
			t.Fatalf("user %v: %d %s, want stdout %q", tt.user, resp.StatusCode, data, tt.want)
		}
	}

	// Sessions use the default too.
	e.createSession(t, obj{"command_id": "default-user", "command": idScript})
	if res := e.streamAll(t, "default-user", 0, 0); string(res.stdout) != "4100 4200 [4200 4300] /home/app app\n" {
		t.Fatalf("session stdout %q stderr %q", res.stdout, res.stderr)
	}

	// File endpoints keep running as root: a written file belongs to root,
	// and a root-only file can be read.
	path := filepath.Join(t.TempDir(), "sub", "f")
	if resp, data := e.do(t, "PUT", "/files?path="+path+"&mode=0600", "secret"); resp.StatusCode != 200 {
		t.Fatalf("put: %d %s", resp.StatusCode, data)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 0 || sys.Gid != 0 {
		t.Fatalf("file owned by %d:%d", sys.Uid, sys.Gid)
	}
	if resp, data := e.do(t, "GET", "/files?path="+path, nil); resp.StatusCode != 200 || string(data) != "secret" {
		t.Fatalf("get: %d %s", resp.StatusCode, data)
	}
	// ... while a command as the default user cannot read it.
	resp, data := e.do(t, "POST", "/exec", obj{"command": "cat " + path})
	var got exec.Result
	decode(t, data, &got)
	if resp.StatusCode != 200 || got.ExitCode == 0 {
		t.Fatalf("user command read a root-only file: %s", data)
	}
}

func TestSessionAsUser(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	e := newEnvWith(t, 0, func(c *proc.Config) { c.Users = userDB(t); c.DefaultCwd = "/" })

	// Pipes: stdin, stdout and stderr can be reopened by the user.
	e.createSession(t, obj{"command_id": "user-pipes", "user": "app:extra",
		"command": idScript + `; cat /dev/stdin; echo err > /dev/stderr`})
	if resp, data := e.do(t, "POST", "/sessions/user-pipes/input", "from stdin\n"); resp.StatusCode != 200 {
		t.Fatalf("input: %d %s", resp.StatusCode, data)
	}
	e.do(t, "POST", "/sessions/user-pipes/close-stdin", nil)
	res := e.streamAll(t, "user-pipes", 0, 0)
	if string(res.stdout) != "4100 4300 [4300] /home/app app\nfrom stdin\n" || string(res.stderr) != "err\n" || res.exit.ExitCode() != 0 {
		t.Fatalf("stdout %q stderr %q exit %d", res.stdout, res.stderr, res.exit.ExitCode())
	}

	// A pty: the terminal belongs to the user, who can reopen it.
	e.createSession(t, obj{"command_id": "user-pty", "user": "4242", "pty": true,
		"command": `id -u; stat -c %u "$(tty)"; echo hi > "$(tty)" && echo reopened`})
	e.waitFinished(t, "user-pty", 5*time.Second)
	res = e.streamAll(t, "user-pty", 0, 0)
	if out := string(res.stdout); out != "4242\r\n4242\r\nhi\r\nreopened\r\n" || res.exit.ExitCode() != 0 {
		t.Fatalf("pty stdout %q exit %d", out, res.exit.ExitCode())
	}
}
