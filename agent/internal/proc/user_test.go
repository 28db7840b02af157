package proc

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"sandbar/agent/internal/initproc"
	"sandbar/agent/internal/users"
)

// testUsers writes a passwd and group file and returns a DB for them.
func testUsers(t *testing.T) users.DB {
	t.Helper()
	dir := t.TempDir()
	db := users.DB{PasswdPath: filepath.Join(dir, "passwd"), GroupPath: filepath.Join(dir, "group")}
	passwd := "root:x:0:0:root:/root:/bin/bash\napp:x:4100:4200:App:/home/app:/bin/sh\n"
	group := "root:x:0:\napp:x:4200:\nextra:x:4300:app\nmore:x:4301:other,app\n"
	if err := os.WriteFile(db.PasswdPath, []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db.GroupPath, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	return db
}

func envOf(env []string, key string) (string, bool) {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return kv[len(key)+1:], true
		}
	}
	return "", false
}

func TestPrepareUser(t *testing.T) {
	db := testUsers(t)
	base := []string{"HOME=/root", "KEEP=1"}
	app := &syscall.Credential{Uid: 4100, Gid: 4200, Groups: []uint32{4300, 4301}}
	root := &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}}
	tests := []struct {
		name     string
		cfg      Config
		spec     Spec
		wantCred *syscall.Credential
		wantEnv  map[string]string // "" value: must be absent
	}{
		{"no user runs as the agent", Config{Users: db, BaseEnv: base}, Spec{Command: "true"}, nil,
			map[string]string{"HOME": "/root", "USER": "", "LOGNAME": ""}},
		{"by name", Config{Users: db, BaseEnv: base}, Spec{Command: "true", User: "app"}, app,
			map[string]string{"HOME": "/home/app", "USER": "app", "LOGNAME": "app", "KEEP": "1"}},
		{"by uid", Config{Users: db, BaseEnv: base}, Spec{Command: "true", User: "4100"}, app,
			map[string]string{"HOME": "/home/app", "USER": "app"}},
		{"uid:gid without entries", Config{Users: db, BaseEnv: base}, Spec{Command: "true", User: "5000:6000"},
			&syscall.Credential{Uid: 5000, Gid: 6000, Groups: []uint32{}},
			map[string]string{"HOME": "/", "USER": "", "LOGNAME": ""}},
		{"name:group", Config{Users: db}, Spec{Command: "true", User: "app:extra"},
			&syscall.Credential{Uid: 4100, Gid: 4300, Groups: []uint32{}}, map[string]string{"USER": "app"}},
		{"request env wins", Config{Users: db, BaseEnv: base},
			Spec{Command: "true", User: "app", Env: map[string]string{"HOME": "/tmp", "USER": "me"}}, app,
			map[string]string{"HOME": "/tmp", "USER": "me", "LOGNAME": "app"}},
		{"default user", Config{Users: db, BaseEnv: base, DefaultUser: "app"}, Spec{Command: "true"}, app,
			map[string]string{"HOME": "/home/app", "USER": "app"}},
		{"explicit root beats the default", Config{Users: db, DefaultUser: "app"}, Spec{Command: "true", User: "root"}, root,
			map[string]string{"HOME": "/root", "USER": "root"}},
		{"explicit 0 beats the default", Config{Users: db, DefaultUser: "app"}, Spec{Command: "true", User: "0"}, root,
			map[string]string{"HOME": "/root", "USER": "root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := tt.cfg.Prepare(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.Cred, tt.wantCred) {
				t.Fatalf("cred %+v, want %+v", p.Cred, tt.wantCred)
			}
			for k, want := range tt.wantEnv {
				got, ok := envOf(p.Env, k)
				if want == "" && ok {
					t.Fatalf("env has %s=%s", k, got)
				}
				if want != "" && got != want {
					t.Fatalf("env %s=%q, want %q (env %q)", k, got, want, p.Env)
				}
			}
		})
	}
}

func TestPrepareUserErrors(t *testing.T) {
	db := testUsers(t)
	_, err := Config{Users: db}.Prepare(Spec{Command: "true", User: "nobodyx"})
	var nf *users.NotFoundError
	if !errors.As(err, &nf) || nf.Error() != "user 'nobodyx' not found in "+db.PasswdPath {
		t.Fatalf("unknown user: %v", err)
	}
	_, err = Config{Users: db}.Prepare(Spec{Command: "true", User: "app:nogroupx"})
	if !errors.As(err, &nf) || nf.Kind != "group" {
		t.Fatalf("unknown group: %v", err)
	}
	_, err = Config{Users: db, DefaultUser: "ghost"}.Prepare(Spec{Command: "true"})
	if !errors.As(err, &nf) || !strings.Contains(nf.Error(), "SANDBAR_AGENT_USER") {
		t.Fatalf("unknown default user: %v", err)
	}
	for _, spec := range []string{"a:b:c", ":0", "app:"} {
		if _, err := (Config{Users: db}).Prepare(Spec{Command: "true", User: spec}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("spec %q: %v, want ErrInvalid", spec, err)
		}
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
}

// TestStartAsUser runs on pipes and on a pty as an unprivileged user that
// must be able to reopen its own standard streams.
func TestStartAsUser(t *testing.T) {
	requireRoot(t)
	cfg := Config{Users: testUsers(t), BaseEnv: []string{"PATH=/usr/bin:/bin"}}
	const script = `echo "$(id -u) $(id -g) $(id -G) $HOME $USER"; echo viaproc > /dev/stdout; echo viaerr > /dev/stderr`
	for _, pty := range []bool{false, true} {
		name := map[bool]string{false: "pipes", true: "pty"}[pty]
		t.Run(name, func(t *testing.T) {
			command := script
			if pty {
				command += `; test -w "$(tty)" && echo ttyok; stat -c %u "$(tty)"`
			} else {
				command += `; cat /dev/stdin`
			}
			p, err := cfg.Prepare(Spec{Command: command, User: "app", PTY: pty})
			if err != nil {
				t.Fatal(err)
			}
			pr, err := Start(initproc.Default(), p, Options{Stdin: true, PTY: pty})
			if err != nil {
				t.Fatal(err)
			}
			defer KillGroup(pr.Pid)
			out, errc := &collector{}, &collector{}
			pumps := []*Pump{NewPump(pr.Stdout, out.sink)}
			if pr.Stderr != nil {
				pumps = append(pumps, NewPump(pr.Stderr, errc.sink))
			}
			if !pty {
				if _, err := pr.Stdin.Write([]byte("viastdin\n")); err != nil {
					t.Fatal(err)
				}
				pr.Stdin.Close()
			}
			ws := <-pr.Done
			Finish(ExitGrace, pumps...)
			got := strings.ReplaceAll(out.String()+errc.String(), "\r\n", "\n")
			if st := StatusOf(ws); st.Code != 0 {
				t.Fatalf("exit %+v, output %q", st, got)
			}
			want := []string{"4100 4200 4200 4300 4301 /home/app app\n", "viaproc\n", "viaerr\n"}
			if pty {
				want = append(want, "ttyok\n", "4100\n")
			} else {
				want = append(want, "viastdin\n")
			}
			for _, w := range want {
				if !strings.Contains(got, w) {
					t.Fatalf("output %q lacks %q", got, w)
				}
			}
		})
	}
}

// An unprivileged user cannot enter a directory it has no access to; that
// is the request's fault.
func TestStartAsUserUnreadableCwd(t *testing.T) {
	requireRoot(t)
	dir := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p, err := Config{Users: testUsers(t)}.Prepare(Spec{Command: "true", User: "app", Cwd: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(initproc.Default(), p, Options{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v, want ErrInvalid", err)
	}
}
