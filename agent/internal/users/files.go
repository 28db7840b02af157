// Package users resolves Docker-style user specifications ("name", "uid",
// "name:group", "uid:gid") against the sandbox's own /etc/passwd and
// /etc/group. It parses the files itself: os/user goes through libc (NSS)
// whenever cgo is enabled and its paths cannot be changed for tests.
package users

import (
	"bufio"
	"io"
	"strconv"
	"strings"
)

// MaxID is the largest uid or gid accepted, as in Docker/runc (which keep
// ids within int32 for 32-bit compatibility).
const MaxID = 1<<31 - 1

// maxLine bounds one line of either file; group member lists can be long.
const maxLine = 1 << 20

// Passwd is one /etc/passwd entry: name:password:uid:gid:gecos:home:shell.
type Passwd struct {
	Name  string
	UID   uint32
	GID   uint32
	Home  string
	Shell string
}

// Group is one /etc/group entry: name:password:gid:member,member,...
type Group struct {
	Name    string
	GID     uint32
	Members []string
}

// ParsePasswd reads passwd-formatted data. Blank lines and lines starting
// with '#' (after leading blanks) are skipped, and so are malformed lines:
// fewer than four fields, an empty name, NIS "+"/"-" entries, or a uid or
// gid that is not a decimal number in 0..MaxID. Missing trailing fields
// (gecos, home, shell) are empty. Only read errors are returned.
func ParsePasswd(r io.Reader) ([]Passwd, error) {
	var out []Passwd
	err := scanLines(r, func(fields []string) {
		if len(fields) < 4 || !validName(fields[0]) {
			return
		}
		uid, ok1 := parseID(fields[2])
		gid, ok2 := parseID(fields[3])
		if !ok1 || !ok2 {
			return
		}
		p := Passwd{Name: fields[0], UID: uid, GID: gid}
		if len(fields) > 5 {
			p.Home = fields[5]
		}
		if len(fields) > 6 {
			p.Shell = fields[6]
		}
		out = append(out, p)
	})
	return out, err
}

// ParseGroup reads group-formatted data with the same rules as ParsePasswd
// (at least three fields, a valid gid). Members are split on commas; empty
// names and surrounding blanks are dropped.
func ParseGroup(r io.Reader) ([]Group, error) {
	var out []Group
	err := scanLines(r, func(fields []string) {
		if len(fields) < 3 || !validName(fields[0]) {
			return
		}
		gid, ok := parseID(fields[2])
		if !ok {
			return
		}
		g := Group{Name: fields[0], GID: gid}
		if len(fields) > 3 {
			for _, m := range strings.Split(fields[3], ",") {
				if m = strings.TrimSpace(m); m != "" {
					g.Members = append(g.Members, m)
				}
			}
		}
		out = append(out, g)
	})
	return out, err
}

// scanLines calls fn with the colon-separated fields of every line that is
// neither blank nor a comment.
func scanLines(r io.Reader, fn func(fields []string)) error {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), maxLine)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fn(strings.Split(line, ":"))
	}
	return s.Err()
}

func validName(name string) bool {
	return name != "" && name[0] != '+' && name[0] != '-'
}

// parseID parses a decimal id in 0..MaxID (digits only: no sign, no blanks).
func parseID(s string) (uint32, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil || n > MaxID {
		return 0, false
	}
	return uint32(n), true
}
