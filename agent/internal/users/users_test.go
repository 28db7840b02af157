package users

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const testPasswd = `# comment line
   # indented comment

root:x:0:0:root:/root:/bin/bash
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
bob:x:1001:1001::/home/bob:/bin/sh
nohome:x:1002:1002:::/bin/sh
short:x:1003:1003
carol:x:1000:2000::/home/carol:/bin/sh
bad uid:x:abc:1:::
badgid:x:7:-1:::
toobig:x:4294967295:1:::
twofields:x
:x:5:5::/:
+nisuser:x:6:6::/:
-nisuser::::::
crlf:x:1010:1010::/home/crlf:/bin/sh` + "\r" + `
1234:x:1500:1500::/home/digits:/bin/sh
`

const testGroup = `# group file
root:x:0:
staff:x:50:alice, bob ,
wheel:x:10:alice
users:x:100:bob,,alice
nogroup:x:65534:
again:x:10:alice
badgid:x:x:alice
two:x
docker:x:999:carol
:x:5:alice
`

func TestParsePasswd(t *testing.T) {
	got, err := ParsePasswd(strings.NewReader(testPasswd))
	if err != nil {
		t.Fatal(err)
	}
	want := []Passwd{
		{"root", 0, 0, "/root", "/bin/bash"},
		{"alice", 1000, 1000, "/home/alice", "/bin/bash"},
		{"bob", 1001, 1001, "/home/bob", "/bin/sh"},
		{"nohome", 1002, 1002, "", "/bin/sh"},
		{"short", 1003, 1003, "", ""},
		{"carol", 1000, 2000, "/home/carol", "/bin/sh"},
		{"crlf", 1010, 1010, "/home/crlf", "/bin/sh"},
		{"1234", 1500, 1500, "/home/digits", "/bin/sh"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseGroup(t *testing.T) {
	got, err := ParseGroup(strings.NewReader(testGroup))
	if err != nil {
		t.Fatal(err)
	}
	want := []Group{
		{"root", 0, nil},
		{"staff", 50, []string{"alice", "bob"}},
		{"wheel", 10, []string{"alice"}},
		{"users", 100, []string{"bob", "alice"}},
		{"nogroup", 65534, nil},
		{"again", 10, []string{"alice"}},
		{"docker", 999, []string{"carol"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got\n%+v\nwant\n%+v", got, want)
	}
}

func TestParseLongLine(t *testing.T) {
	members := strings.Repeat("someone,", 20000) + "alice"
	got, err := ParseGroup(strings.NewReader("big:x:7:" + members + "\n"))
	if err != nil || len(got) != 1 || len(got[0].Members) != 20001 {
		t.Fatalf("got %d groups, err %v", len(got), err)
	}
}

func writeDB(t *testing.T, passwd, group string) DB {
	t.Helper()
	dir := t.TempDir()
	db := DB{PasswdPath: filepath.Join(dir, "passwd"), GroupPath: filepath.Join(dir, "group")}
	if err := os.WriteFile(db.PasswdPath, []byte(passwd), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db.GroupPath, []byte(group), 0o644); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestResolve(t *testing.T) {
	db := writeDB(t, testPasswd, testGroup)
	tests := []struct {
		spec string
		want Identity
	}{
		{"root", Identity{Name: "root", UID: 0, GID: 0, Home: "/root"}},
		{"0", Identity{Name: "root", UID: 0, GID: 0, Home: "/root"}},
		// Supplementary groups: every group listing the name, each gid once.
		{"alice", Identity{Name: "alice", UID: 1000, GID: 1000, Groups: []uint32{50, 10, 100}, Home: "/home/alice"}},
		// A uid matches the first entry with that uid.
		{"1000", Identity{Name: "alice", UID: 1000, GID: 1000, Groups: []uint32{50, 10, 100}, Home: "/home/alice"}},
		{"carol", Identity{Name: "carol", UID: 1000, GID: 2000, Groups: []uint32{999}, Home: "/home/carol"}},
		{"nohome", Identity{Name: "nohome", UID: 1002, GID: 1002, Home: "/"}},
		// A uid without an entry: gid 0, home /, no name, no groups.
		{"4242", Identity{UID: 4242, GID: 0, Home: "/"}},
		{"4242:77", Identity{UID: 4242, GID: 77, Home: "/"}},
		{"4242:staff", Identity{UID: 4242, GID: 50, Home: "/"}},
		// An explicit group replaces the primary gid and adds no others.
		{"alice:staff", Identity{Name: "alice", UID: 1000, GID: 50, Home: "/home/alice"}},
		{"alice:4343", Identity{Name: "alice", UID: 1000, GID: 4343, Home: "/home/alice"}},
		{"1001:100", Identity{Name: "bob", UID: 1001, GID: 100, Home: "/home/bob"}},
		{"bob:10", Identity{Name: "bob", UID: 1001, GID: 10, Home: "/home/bob"}},
		// Digits are an id, never a name.
		{"1234", Identity{UID: 1234, Home: "/"}},
		{"crlf", Identity{Name: "crlf", UID: 1010, GID: 1010, Home: "/home/crlf"}},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := db.Resolve(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestResolveNotFound(t *testing.T) {
	db := writeDB(t, testPasswd, testGroup)
	tests := []struct{ spec, msg string }{
		{"nobodyx", "user 'nobodyx' not found in " + db.PasswdPath},
		{"nobodyx:staff", "user 'nobodyx' not found in " + db.PasswdPath},
		{"alice:nogroupx", "group 'nogroupx' not found in " + db.GroupPath},
		{"4242:nogroupx", "group 'nogroupx' not found in " + db.GroupPath},
		// Skipped (malformed) lines do not match.
		{"twofields", "user 'twofields' not found in " + db.PasswdPath},
		{"+nisuser", "user '+nisuser' not found in " + db.PasswdPath},
		{"alice:badgid", "group 'badgid' not found in " + db.GroupPath},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			_, err := db.Resolve(tt.spec)
			var nf *NotFoundError
			if !errors.Is(err, ErrNotFound) || !errors.As(err, &nf) {
				t.Fatalf("err %v, want ErrNotFound", err)
			}
			if err.Error() != tt.msg {
				t.Fatalf("message %q, want %q", err, tt.msg)
			}
		})
	}
}

func TestResolveInvalid(t *testing.T) {
	db := writeDB(t, testPasswd, testGroup)
	for _, spec := range []string{"", ":", ":staff", "alice:", "a:b:c", "2147483648", "1:99999999999", "al\x00ice"} {
		t.Run(spec, func(t *testing.T) {
			if _, err := db.Resolve(spec); !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("err %v, want ErrInvalidSpec", err)
			}
		})
	}
	// The largest accepted id.
	if id, err := db.Resolve("2147483647:2147483647"); err != nil || id.UID != MaxID || id.GID != MaxID {
		t.Fatalf("max id: %+v %v", id, err)
	}
}

func TestResolveMissingFiles(t *testing.T) {
	dir := t.TempDir()
	db := DB{PasswdPath: filepath.Join(dir, "passwd"), GroupPath: filepath.Join(dir, "group")}
	if id, err := db.Resolve("33:44"); err != nil || !reflect.DeepEqual(id, Identity{UID: 33, GID: 44, Home: "/"}) {
		t.Fatalf("numeric without files: %+v %v", id, err)
	}
	if _, err := db.Resolve("root"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("name without passwd: %v", err)
	}
	if _, err := db.Resolve("33:staff"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("group name without group file: %v", err)
	}
	// A passwd file that cannot be read is an error, not "not found".
	if err := os.Mkdir(db.PasswdPath, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Resolve("33"); err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("unreadable passwd: %v", err)
	}
}

func TestDefaultPaths(t *testing.T) {
	if (DB{}).passwdPath() != "/etc/passwd" || (DB{}).groupPath() != "/etc/group" {
		t.Fatal("zero DB must use /etc/passwd and /etc/group")
	}
}

func TestIdentityEnvAndCredential(t *testing.T) {
	id := Identity{Name: "alice", UID: 1000, GID: 50, Groups: []uint32{10}, Home: "/home/alice"}
	if got := id.Env(); !reflect.DeepEqual(got, map[string]string{"HOME": "/home/alice", "USER": "alice", "LOGNAME": "alice"}) {
		t.Fatalf("env %v", got)
	}
	if got := (Identity{UID: 5, Home: "/"}).Env(); !reflect.DeepEqual(got, map[string]string{"HOME": "/"}) {
		t.Fatalf("env without name %v", got)
	}
	c := id.Credential()
	if c.Uid != 1000 || c.Gid != 50 || !reflect.DeepEqual(c.Groups, []uint32{10}) || c.NoSetGroups {
		t.Fatalf("credential %+v", c)
	}
	// No supplementary groups still clears the agent's own.
	if c := (Identity{UID: 5}).Credential(); c.Groups == nil || len(c.Groups) != 0 || c.NoSetGroups {
		t.Fatalf("credential %+v", c)
	}
}
