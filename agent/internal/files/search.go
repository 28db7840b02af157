package files

// POST /glob and POST /grep: read-only searches of the sandbox's filesystem.
//
// Both walk from an absolute directory in lexical order, never descend into
// symlinked directories, and when walking from / do not descend into /proc,
// /sys and /dev. Entries the agent may not read are skipped silently. A search
// stops after limit results (default 1000, at most 10000) or when
// SearchDeadline has passed; either way the answer says truncated: true.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"sandbar/agent/internal/apierr"
)

const (
	// DefaultSearchLimit is the result cap of a search that sets none.
	DefaultSearchLimit = 1000
	// MaxSearchLimit caps limit; larger values are lowered to it.
	MaxSearchLimit = 10000
	// GrepMaxFileBytes: larger files are not searched.
	GrepMaxFileBytes = 10 << 20
	// grepBinaryProbe bytes are checked for NUL to skip binary files.
	grepBinaryProbe = 8 << 10
	// GrepMaxLineChars bounds the text of a reported line (in characters).
	GrepMaxLineChars = 2000
)

// SearchDeadline bounds how long one search may walk; a search that runs out
// of time returns what it found with truncated: true.
var SearchDeadline = 30 * time.Second

// Directories not descended into when a search walks from /.
var rootSkip = map[string]bool{"proc": true, "sys": true, "dev": true}

// GlobRequest is the body of POST /glob.
type GlobRequest struct {
	Pattern string `json:"pattern"`
	Path    string `json:"path"`
	Limit   int    `json:"limit"`
}

// GrepRequest is the body of POST /grep. Pattern is a literal string.
type GrepRequest struct {
	Pattern string `json:"pattern"`
	Path    string `json:"path"`
	Glob    string `json:"glob"`
	Limit   int    `json:"limit"`
}

// FileInfo is one entry found by Glob.
type FileInfo struct {
	Path       string `json:"path"`
	IsDir      bool   `json:"is_dir"`
	SizeBytes  int64  `json:"size_bytes"`
	ModifiedAt string `json:"modified_at,omitempty"`
}

// GlobResult is the response of POST /glob.
type GlobResult struct {
	Matches   []FileInfo `json:"matches"`
	Truncated bool       `json:"truncated"`
}

// GrepMatch is one matching line found by Grep.
type GrepMatch struct {
	Path string `json:"path"`
	Line int    `json:"line"`
	Text string `json:"text"`
}

// GrepResult is the response of POST /grep.
type GrepResult struct {
	Matches   []GrepMatch `json:"matches"`
	Truncated bool        `json:"truncated"`
}

// globPattern matches slash-separated paths relative to the search root:
// "**" is any number of segments (zero included), other segments are
// path.Match patterns (*, ?, [...], [^...] or [!...], \ escapes) matching
// one segment. "*" matches names starting with a dot too.
type globPattern struct {
	segs []string
}

// compileGlob parses pattern. With anyDepth, a pattern without "/" and
// without "**" matches an entry's base name at any depth.
func compileGlob(pattern string, anyDepth bool) (*globPattern, error) {
	if pattern == "" {
		return nil, apierr.New(apierr.BadRequest, "pattern must not be empty")
	}
	if strings.HasPrefix(pattern, "/") {
		return nil, apierr.New(apierr.BadRequest, "glob %q must be relative to path", pattern)
	}
	var segs []string
	for _, s := range strings.Split(pattern, "/") {
		switch {
		case s == "" || s == ".":
			continue
		case s == "**":
			if len(segs) > 0 && segs[len(segs)-1] == "**" {
				continue
			}
		default:
			s = shellClasses(s)
			if _, err := path.Match(s, ""); err != nil {
				return nil, apierr.New(apierr.BadRequest, "invalid glob %q: %v", pattern, err)
			}
		}
		segs = append(segs, s)
	}
	if len(segs) == 0 {
		return nil, apierr.New(apierr.BadRequest, "glob %q matches nothing below path", pattern)
	}
	if anyDepth && !strings.Contains(pattern, "/") && !strings.Contains(pattern, "**") {
		segs = append([]string{"**"}, segs...)
	}
	return &globPattern{segs: segs}, nil
}

// shellClasses rewrites the shell's negated class "[!...]" to path.Match's
// "[^...]" (both spellings are accepted).
func shellClasses(seg string) string {
	if !strings.Contains(seg, "[!") {
		return seg
	}
	b := []byte(seg)
	inClass := false
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '\\':
			i++ // the escaped byte is literal
		case !inClass && b[i] == '[':
			inClass = true
			if i+1 < len(b) && b[i+1] == '!' {
				b[i+1] = '^'
				i++
			}
		case inClass && b[i] == ']':
			inClass = false
		}
	}
	return string(b)
}

// globState is the set of pattern positions reachable after the segments
// seen so far (an NFA over segments).
type globState []bool

// start is the state before any segment.
func (g *globPattern) start() globState {
	st := make(globState, len(g.segs)+1)
	st[0] = true
	g.close(st)
	return st
}

// close adds the positions reachable by letting a "**" match nothing.
func (g *globPattern) close(st globState) {
	for i, s := range g.segs {
		if st[i] && s == "**" {
			st[i+1] = true
		}
	}
}

// step consumes one path segment.
func (g *globPattern) step(st globState, name string) globState {
	next := make(globState, len(st))
	for i, s := range g.segs {
		if !st[i] {
			continue
		}
		if s == "**" {
			next[i] = true
		} else if ok, _ := path.Match(s, name); ok {
			next[i+1] = true
		}
	}
	g.close(next)
	return next
}

// accepts reports whether the segments seen form a match.
func (g *globPattern) accepts(st globState) bool { return st[len(g.segs)] }

// alive reports whether some longer path could still match.
func (g *globPattern) alive(st globState) bool {
	for i := 0; i < len(g.segs); i++ {
		if st[i] {
			return true
		}
	}
	return false
}

// walker carries what every step of a search needs.
type walker struct {
	ctx      context.Context
	deadline time.Time
	stopped  bool // deadline passed or the client went away
}

func newWalker(ctx context.Context) *walker {
	return &walker{ctx: ctx, deadline: time.Now().Add(SearchDeadline)}
}

// expired reports (and remembers) that the search must stop.
func (w *walker) expired() bool {
	if !w.stopped && (w.ctx.Err() != nil || time.Now().After(w.deadline)) {
		w.stopped = true
	}
	return w.stopped
}

// descend reports whether a directory entry of dir may be walked into.
func (w *walker) descend(dir string, e os.DirEntry) bool {
	return e.IsDir() && !(dir == "/" && rootSkip[e.Name()])
}

// searchRoot validates the request's path and stats it (symlinks followed).
func searchRoot(p string) (string, os.FileInfo, error) {
	if p == "" {
		return "", nil, apierr.New(apierr.BadRequest, "path is required")
	}
	if !filepath.IsAbs(p) {
		return "", nil, apierr.New(apierr.BadRequest, "path %q is not absolute", p)
	}
	p = filepath.Clean(p)
	st, err := os.Stat(p)
	if err != nil {
		return "", nil, fsError(err)
	}
	return p, st, nil
}

// searchLimit applies the default and the cap.
func searchLimit(n int) (int, error) {
	switch {
	case n < 0:
		return 0, apierr.New(apierr.BadRequest, "limit must not be negative")
	case n == 0:
		return DefaultSearchLimit, nil
	case n > MaxSearchLimit:
		return MaxSearchLimit, nil
	}
	return n, nil
}

// readDir lists dir sorted by name; the root's errors are reported, deeper
// ones (permissions, races) skip the directory.
func readDir(dir string, isRoot bool) ([]os.DirEntry, error) {
	entries, err := os.ReadDir(dir)
	if err != nil && isRoot {
		return nil, fsError(err)
	}
	return entries, nil
}

// Glob finds the files and directories under req.Path whose path relative
// to it matches req.Pattern.
func Glob(ctx context.Context, req GlobRequest) (GlobResult, error) {
	res := GlobResult{Matches: []FileInfo{}}
	root, st, err := searchRoot(req.Path)
	if err != nil {
		return res, err
	}
	g, err := compileGlob(req.Pattern, false)
	if err != nil {
		return res, err
	}
	limit, err := searchLimit(req.Limit)
	if err != nil {
		return res, err
	}
	if !st.IsDir() {
		return res, apierr.New(apierr.NotADirectory, "%s is not a directory", root)
	}
	w := newWalker(ctx)
	var walk func(dir string, state globState, isRoot bool) error
	walk = func(dir string, state globState, isRoot bool) error {
		entries, err := readDir(dir, isRoot)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if res.Truncated || w.expired() {
				res.Truncated = true
				return nil
			}
			full := filepath.Join(dir, e.Name())
			next := g.step(state, e.Name())
			if g.accepts(next) {
				if len(res.Matches) == limit {
					res.Truncated = true
					return nil
				}
				if info, ok := entryInfo(full, e); ok {
					res.Matches = append(res.Matches, info)
				}
			}
			if w.descend(dir, e) && g.alive(next) {
				if err := walk(full, next, false); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root, g.start(), true); err != nil {
		return GlobResult{Matches: []FileInfo{}}, err
	}
	return res, nil
}

// entryInfo describes one entry; a symlink is described by its target when
// it has one (it is still never walked into). ok is false when the entry
// vanished.
func entryInfo(full string, e os.DirEntry) (FileInfo, bool) {
	var st os.FileInfo
	var err error
	if e.Type()&os.ModeSymlink != 0 {
		st, err = os.Stat(full)
	}
	if st == nil || err != nil {
		if st, err = e.Info(); err != nil {
			return FileInfo{}, false
		}
	}
	info := FileInfo{Path: full, IsDir: st.IsDir(), ModifiedAt: st.ModTime().UTC().Format("2006-01-02T15:04:05.000Z07:00")}
	if !info.IsDir {
		info.SizeBytes = st.Size()
	}
	return info, true
}

// errLimit ends a grep walk once limit+1 matches are known.
var errLimit = errors.New("limit reached")

// Grep finds the lines containing req.Pattern (a literal string) in the
// regular files under req.Path, restricted to files matching req.Glob when
// set. Symlinks are not followed (except the root itself); files larger than
// GrepMaxFileBytes and files with a NUL in their first 8 KiB are skipped.
func Grep(ctx context.Context, req GrepRequest) (GrepResult, error) {
	res := GrepResult{Matches: []GrepMatch{}}
	root, st, err := searchRoot(req.Path)
	if err != nil {
		return res, err
	}
	if req.Pattern == "" {
		return res, apierr.New(apierr.BadRequest, "pattern must not be empty")
	}
	var g *globPattern
	if req.Glob != "" {
		if g, err = compileGlob(req.Glob, true); err != nil {
			return res, err
		}
	}
	limit, err := searchLimit(req.Limit)
	if err != nil {
		return res, err
	}
	needle := []byte(req.Pattern)
	w := newWalker(ctx)
	add := func(m GrepMatch) error {
		if len(res.Matches) == limit {
			res.Truncated = true
			return errLimit
		}
		res.Matches = append(res.Matches, m)
		return nil
	}
	if !st.IsDir() {
		// A file as the root: search it alone, the glob matching its name.
		if g == nil || g.accepts(g.step(g.start(), filepath.Base(root))) {
			if st.Mode().IsRegular() {
				if err := grepFile(root, st, needle, add); err != nil && err != errLimit {
					return res, err
				}
			}
		}
		return res, nil
	}
	var walk func(dir string, state globState, isRoot bool) error
	walk = func(dir string, state globState, isRoot bool) error {
		entries, err := readDir(dir, isRoot)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if w.expired() {
				res.Truncated = true
				return errLimit
			}
			full := filepath.Join(dir, e.Name())
			var next globState
			if g != nil {
				next = g.step(state, e.Name())
			}
			switch {
			case w.descend(dir, e):
				if g == nil || g.alive(next) {
					if err := walk(full, next, false); err != nil {
						return err
					}
				}
			case e.Type().IsRegular():
				if g != nil && !g.accepts(next) {
					continue
				}
				info, err := e.Info()
				if err != nil || !info.Mode().IsRegular() {
					continue
				}
				if err := grepFile(full, info, needle, add); err != nil {
					return err
				}
			}
		}
		return nil
	}
	var start globState
	if g != nil {
		start = g.start()
	}
	if err := walk(root, start, true); err != nil && err != errLimit {
		return GrepResult{Matches: []GrepMatch{}}, err
	}
	return res, nil
}

// grepFile reports each line of the file at p that contains needle. Files it
// cannot open, large files and binary files are skipped (nil error); only
// add's error ends the search.
func grepFile(p string, st os.FileInfo, needle []byte, add func(GrepMatch) error) error {
	if st.Size() > GrepMaxFileBytes {
		return nil
	}
	// O_NONBLOCK: an entry swapped for a fifo since it was listed must not hang the search.
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil
	}
	defer f.Close()
	if fst, err := f.Stat(); err != nil || !fst.Mode().IsRegular() || fst.Size() > GrepMaxFileBytes {
		return nil
	}
	br := bufio.NewReaderSize(f, 64<<10)
	if head, _ := br.Peek(grepBinaryProbe); bytes.IndexByte(head, 0) >= 0 {
		return nil
	}
	sc := bufio.NewScanner(br)
	// A file that grew past the size limit while being read stops with
	// ErrTooLong at the first overlong line; what was found stays.
	sc.Buffer(make([]byte, 0, 64<<10), GrepMaxFileBytes+1)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if !bytes.Contains(line, needle) {
			continue
		}
		if err := add(GrepMatch{Path: p, Line: n, Text: lineText(line)}); err != nil {
			return err
		}
	}
	return nil // a read error (or ErrTooLong) ends this file only
}

// lineText drops a trailing CR (ScanLines already does) and keeps at most GrepMaxLineChars characters
// (an invalid UTF-8 byte counts as one; JSON turns it into U+FFFD).
func lineText(line []byte) string {
	line = bytes.TrimSuffix(line, []byte("\r"))
	i, n := 0, 0
	for i < len(line) && n < GrepMaxLineChars {
		_, size := utf8.DecodeRune(line[i:])
		i += size
		n++
	}
	return string(line[:i])
}
