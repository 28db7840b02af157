package users

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
)

// Errors of Resolve; test with errors.Is.
var (
	// ErrNotFound: a user or group name has no entry (a *NotFoundError).
	ErrNotFound = errors.New("user or group not found")
	// ErrInvalidSpec: the specification itself is malformed.
	ErrInvalidSpec = errors.New("invalid user")
)

// NotFoundError reports a name missing from the passwd or group file.
type NotFoundError struct {
	Kind string // "user" or "group"
	Name string
	File string // the file searched
	Note string // optional context, appended in parentheses
}

func (e *NotFoundError) Error() string {
	msg := fmt.Sprintf("%s '%s' not found in %s", e.Kind, e.Name, e.File)
	if e.Note != "" {
		msg += " (" + e.Note + ")"
	}
	return msg
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// DB names the files users are resolved from.
type DB struct {
	PasswdPath string // "" means /etc/passwd
	GroupPath  string // "" means /etc/group
}

// System is the sandbox's own user database.
var System = DB{PasswdPath: "/etc/passwd", GroupPath: "/etc/group"}

func (db DB) passwdPath() string {
	if db.PasswdPath == "" {
		return System.PasswdPath
	}
	return db.PasswdPath
}

func (db DB) groupPath() string {
	if db.GroupPath == "" {
		return System.GroupPath
	}
	return db.GroupPath
}

// Identity is a resolved user: what a command runs as.
type Identity struct {
	Name   string   // the passwd entry's name; "" for a uid without an entry
	UID    uint32   //
	GID    uint32   // primary group
	Groups []uint32 // supplementary groups
	Home   string   // the passwd entry's home, "/" when unknown or empty
}

// Credential returns the identity as a credential for SysProcAttr.
// Supplementary groups are always set (an empty list clears the agent's).
func (id Identity) Credential() *syscall.Credential {
	return &syscall.Credential{Uid: id.UID, Gid: id.GID, Groups: append([]uint32{}, id.Groups...)}
}

// Env returns the variables a login would set for the identity: HOME, and
// USER and LOGNAME when the name is known.
func (id Identity) Env() map[string]string {
	env := map[string]string{"HOME": id.Home}
	if id.Name != "" {
		env["USER"] = id.Name
		env["LOGNAME"] = id.Name
	}
	return env
}

// ParseSpec splits "user[:group]". Both parts must be non-empty when present.
func ParseSpec(spec string) (user, group string, hasGroup bool, err error) {
	user, group, hasGroup = strings.Cut(spec, ":")
	switch {
	case user == "":
		return "", "", false, fmt.Errorf("%w %q: want name, uid, name:group or uid:gid", ErrInvalidSpec, spec)
	case hasGroup && group == "":
		return "", "", false, fmt.Errorf("%w %q: empty group after ':'", ErrInvalidSpec, spec)
	case strings.Contains(group, ":"):
		return "", "", false, fmt.Errorf("%w %q: more than one ':'", ErrInvalidSpec, spec)
	case strings.ContainsAny(spec, "\x00\n"):
		return "", "", false, fmt.Errorf("%w %q: control characters", ErrInvalidSpec, spec)
	}
	return user, group, hasGroup, nil
}

// numeric reports whether s is all digits; such a spec is an id, never a
// name (as in Docker). An id out of 0..MaxID is an error.
func numeric(kind, s string) (uint32, bool, error) {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false, nil
		}
	}
	id, ok := parseID(s)
	if !ok {
		return 0, true, fmt.Errorf("%w: %s %s out of range 0-%d", ErrInvalidSpec, kind, s, MaxID)
	}
	return id, true, nil
}

// Resolve resolves spec the way Docker resolves USER:
//
//   - "name" must exist in the passwd file; "uid" need not: without an entry
//     the gid is 0 and the home "/".
//   - With an entry, the primary gid is the entry's and the supplementary
//     groups are the groups that list the user's name as a member.
//   - An explicit group ("name:group" by name, "uid:gid" by number) replaces
//     the primary gid, and then no supplementary groups are added. A group
//     name must exist in the group file; a number need not.
//
// A missing passwd or group file is treated as empty. Errors wrap
// ErrInvalidSpec or ErrNotFound, or are read errors.
func (db DB) Resolve(spec string) (Identity, error) {
	userPart, groupPart, hasGroup, err := ParseSpec(spec)
	if err != nil {
		return Identity{}, err
	}
	uid, uidNumeric, err := numeric("uid", userPart)
	if err != nil {
		return Identity{}, err
	}
	var gid uint32
	gidNumeric := false
	if hasGroup {
		if gid, gidNumeric, err = numeric("gid", groupPart); err != nil {
			return Identity{}, err
		}
	}

	passwd, err := readPasswd(db.passwdPath())
	if err != nil {
		return Identity{}, err
	}
	id := Identity{Home: "/"}
	var entry *Passwd
	for i := range passwd {
		p := &passwd[i]
		if (uidNumeric && p.UID == uid) || (!uidNumeric && p.Name == userPart) {
			entry = p // first match wins
			break
		}
	}
	switch {
	case entry != nil:
		id.Name, id.UID, id.GID = entry.Name, entry.UID, entry.GID
		if entry.Home != "" {
			id.Home = entry.Home
		}
	case uidNumeric:
		id.UID = uid
	default:
		return Identity{}, &NotFoundError{Kind: "user", Name: userPart, File: db.passwdPath()}
	}

	if !hasGroup && id.Name == "" {
		return id, nil // a bare uid without an entry: no groups to look up
	}
	groups, err := readGroup(db.groupPath())
	if err != nil {
		return Identity{}, err
	}
	if hasGroup {
		for _, g := range groups {
			if (gidNumeric && g.GID == gid) || (!gidNumeric && g.Name == groupPart) {
				id.GID = g.GID
				return id, nil
			}
		}
		if !gidNumeric {
			return Identity{}, &NotFoundError{Kind: "group", Name: groupPart, File: db.groupPath()}
		}
		id.GID = gid
		return id, nil
	}
	seen := map[uint32]bool{}
	for _, g := range groups {
		if seen[g.GID] {
			continue
		}
		for _, m := range g.Members {
			if m == id.Name {
				id.Groups = append(id.Groups, g.GID)
				seen[g.GID] = true
				break
			}
		}
	}
	return id, nil
}

func readPasswd(path string) ([]Passwd, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	defer f.Close()
	entries, err := ParsePasswd(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return entries, nil
}

func readGroup(path string) ([]Group, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read groups: %w", err)
	}
	defer f.Close()
	entries, err := ParseGroup(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return entries, nil
}
