// Package proc turns command requests into processes: environment layering,
// shell fallback, working directory, pipes or a pty, and draining output.
// Processes are started through the initproc reaper and never waited for
// directly.
package proc

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"sandbar/agent/internal/users"
)

// Defaults from the protocol.
const (
	DefaultShell  = "/bin/bash"
	FallbackShell = "/bin/sh"
	DefaultPath   = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	DefaultTerm   = "xterm-256color"
)

// ErrInvalid marks errors caused by the request (bad cwd, missing shell,
// program not executable) as opposed to failures of the agent itself.
var ErrInvalid = errors.New("invalid command")

// Config is the environment every command starts from.
type Config struct {
	BaseEnv     []string // KEY=VALUE, the image's Env without the agent's variables
	DefaultCwd  string   // used when a request has no cwd
	DefaultUser string   // user spec used when a request has none; "" runs as the agent (root)
	Users       users.DB // where user names are resolved; zero means /etc/passwd and /etc/group
}

// Spec is what a request asks to run.
type Spec struct {
	Command string
	Shell   string
	Env     map[string]string
	Cwd     string
	PTY     bool   // adds TERM when the environment has none
	User    string // "name", "uid", "name:group" or "uid:gid"; "" means Config.DefaultUser
}

// Prepared is a fully resolved command, ready for Start.
type Prepared struct {
	Path string   // the shell binary
	Argv []string // [shell, "-c", command]
	Env  []string
	Dir  string
	// Cred is the identity to run as; nil runs as the agent itself.
	Cred *syscall.Credential
}

// Prepare resolves s against c.
func (c Config) Prepare(s Spec) (Prepared, error) {
	if s.Command == "" {
		return Prepared{}, fmt.Errorf("%w: command is empty", ErrInvalid)
	}
	if err := ValidateEnv(s.Env); err != nil {
		return Prepared{}, err
	}
	cred, overlay, err := c.resolveUser(s.User, s.Env)
	if err != nil {
		return Prepared{}, err
	}
	env := mergeEnv(c.BaseEnv, overlay)
	if !hasEnv(env, "PATH") {
		env = append(env, "PATH="+DefaultPath)
	}
	if s.PTY && !hasEnv(env, "TERM") {
		env = append(env, "TERM="+DefaultTerm)
	}
	dir, err := c.resolveDir(s.Cwd)
	if err != nil {
		return Prepared{}, err
	}
	shell, err := resolveShell(s.Shell, lookupEnv(env, "PATH"))
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{Path: shell, Argv: []string{shell, "-c", s.Command}, Env: env, Dir: dir, Cred: cred}, nil
}

// resolveUser resolves the request's user (or the default) and returns its
// credential (nil when neither is set) and the environment overlay: the
// user's HOME, USER and LOGNAME under the request's own env, which wins.
func (c Config) resolveUser(spec string, reqEnv map[string]string) (*syscall.Credential, map[string]string, error) {
	fromDefault := spec == ""
	if fromDefault {
		spec = c.DefaultUser
	}
	if spec == "" {
		return nil, reqEnv, nil
	}
	id, err := c.Users.Resolve(spec)
	if err != nil {
		var nf *users.NotFoundError
		switch {
		case errors.As(err, &nf):
			if fromDefault {
				e := *nf
				e.Note = "the default user from SANDBAR_AGENT_USER"
				return nil, nil, &e
			}
			return nil, nil, err
		case errors.Is(err, users.ErrInvalidSpec):
			if fromDefault {
				return nil, nil, fmt.Errorf("%w: default user from SANDBAR_AGENT_USER: %v", ErrInvalid, err)
			}
			return nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		return nil, nil, fmt.Errorf("resolve user %q: %w", spec, err)
	}
	overlay := id.Env()
	for k, v := range reqEnv {
		overlay[k] = v
	}
	return id.Credential(), overlay, nil
}

func (c Config) resolveDir(cwd string) (string, error) {
	base := c.DefaultCwd
	if base == "" {
		base = "/"
	}
	dir := base
	if cwd != "" {
		dir = cwd
		if !filepath.IsAbs(dir) {
			dir = filepath.Join(base, dir)
		}
	}
	st, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("%w: cwd %s: %v", ErrInvalid, dir, errnoOf(err))
	}
	if !st.IsDir() {
		return "", fmt.Errorf("%w: cwd %s: not a directory", ErrInvalid, dir)
	}
	return dir, nil
}

func errnoOf(err error) error {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return err
}

// resolveShell returns the requested shell (default /bin/bash) if it exists
// as an executable file, else /bin/sh. A name without a slash is looked up
// in path.
func resolveShell(requested, path string) (string, error) {
	if requested == "" {
		requested = DefaultShell
	}
	if found := findExecutable(requested, path); found != "" {
		return found, nil
	}
	if found := findExecutable(FallbackShell, ""); found != "" {
		return found, nil
	}
	return "", fmt.Errorf("%w: shell %s not found and no %s", ErrInvalid, requested, FallbackShell)
}

func findExecutable(name, path string) string {
	if strings.Contains(name, "/") {
		if isExecutable(name) {
			return name
		}
		return ""
	}
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		if p := filepath.Join(dir, name); isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0
}

// mergeEnv layers overlay on top of base. Existing keys keep their position;
// new keys are appended in sorted order so the result is deterministic.
func mergeEnv(base []string, overlay map[string]string) []string {
	out := make([]string, 0, len(base)+len(overlay))
	seen := make(map[string]bool, len(overlay))
	for _, kv := range base {
		k := kv
		if i := strings.IndexByte(kv, '='); i >= 0 {
			k = kv[:i]
		}
		if v, ok := overlay[k]; ok {
			if !seen[k] {
				out = append(out, k+"="+v)
				seen[k] = true
			}
			continue
		}
		out = append(out, kv)
	}
	keys := make([]string, 0, len(overlay))
	for k := range overlay {
		if !seen[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k+"="+overlay[k])
	}
	return out
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

func lookupEnv(env []string, key string) string {
	v := ""
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			v = kv[len(key)+1:] // last one wins, as in getenv of most libcs
		}
	}
	return v
}

// ValidateEnv rejects keys that cannot be represented in an environment.
func ValidateEnv(env map[string]string) error {
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.ContainsRune(v, 0) {
			return fmt.Errorf("%w: bad env entry %q", ErrInvalid, k)
		}
	}
	return nil
}
