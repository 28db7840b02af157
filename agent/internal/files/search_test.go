package files

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"sandbar/agent/internal/apierr"
)

// makeTree creates files (path relative to root -> content; a trailing "/"
// makes a directory) and returns root.
func makeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if strings.HasSuffix(rel, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// wantCode checks that err is an *apierr.Error with code (and status).
func wantCode(t *testing.T, err error, code string, status int) {
	t.Helper()
	var e *apierr.Error
	if !errors.As(err, &e) || e.Code != code || e.HTTPStatus() != status {
		t.Fatalf("got error %v, want %s (%d)", err, code, status)
	}
}

func TestGlobPatternMatching(t *testing.T) {
	tests := []struct {
		pattern  string
		anyDepth bool // grep's file filter: a bare pattern matches base names
		path     string
		want     bool
	}{
		{"*.py", false, "a.py", true},
		{"*.py", false, "src/a.py", false},
		{"*.py", true, "src/deep/a.py", true},
		{"*.py", true, "a.py", true},
		{"src/*.py", true, "a.py", false},
		{"src/*.py", true, "src/a.py", true},
		{"src/*.py", true, "x/src/a.py", false},
		{"**/*.py", false, "a.py", true},
		{"**/*.py", false, "src/deep/a.py", true},
		{"**", false, "a/b/c", true},
		{"src/**", false, "src", true},
		{"src/**", false, "src/a/b", true},
		{"src/**/test_*.py", false, "src/test_a.py", true},
		{"src/**/test_*.py", false, "src/x/y/test_a.py", true},
		{"src/**/test_*.py", false, "lib/x/test_a.py", false},
		{"**/b/**/c", false, "a/b/x/y/c", true},
		{"**/b/**/c", false, "a/x/y/c", false},
		{"a/**/**/b", false, "a/b", true},
		{"?.txt", false, "a.txt", true},
		{"?.txt", false, "ab.txt", false},
		{"[ab].txt", false, "b.txt", true},
		{"[!ab].txt", false, "b.txt", false},
		{"[!ab].txt", false, "c.txt", true},
		{"[^ab].txt", false, "c.txt", true},
		{`\[!ab].txt`, false, "[!ab].txt", true},
		{`\[!ab].txt`, false, "c.txt", false},
		{`[\!a].txt`, false, "!.txt", true},
		{`\*.txt`, false, "*.txt", true},
		{`\*.txt`, false, "a.txt", false},
		{"./src//*.py", false, "src/a.py", true},
		{"*", false, "a", true},
		{"*", false, "a/b", false},
		{"*", false, ".hidden", true},
	}
	for _, tc := range tests {
		g, err := compileGlob(tc.pattern, tc.anyDepth)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		st := g.start()
		for _, seg := range strings.Split(tc.path, "/") {
			st = g.step(st, seg)
		}
		if got := g.accepts(st); got != tc.want {
			t.Errorf("match(%q, anyDepth=%v, %q) = %v, want %v", tc.pattern, tc.anyDepth, tc.path, got, tc.want)
		}
	}
}

func TestGlobPatternPruning(t *testing.T) {
	tests := []struct {
		pattern string
		dir     string
		alive   bool
	}{
		{"*.py", "src", false},
		{"src/*.py", "src", true},
		{"src/*.py", "lib", false},
		{"src/*.py", "src/sub", false},
		{"**/*.py", "a/b/c", true},
		{"src/**", "src/a", true},
	}
	for _, tc := range tests {
		g, err := compileGlob(tc.pattern, false)
		if err != nil {
			t.Fatal(err)
		}
		st := g.start()
		for _, seg := range strings.Split(tc.dir, "/") {
			st = g.step(st, seg)
		}
		if got := g.alive(st); got != tc.alive {
			t.Errorf("alive(%q after %q) = %v, want %v", tc.pattern, tc.dir, got, tc.alive)
		}
	}
}

func TestGlobPatternErrors(t *testing.T) {
	for _, p := range []string{"", "[", "src/[a-", "/abs/*.py", "./", "\\"} {
		if _, err := compileGlob(p, false); err == nil {
			t.Errorf("compileGlob(%q) succeeded", p)
		} else {
			wantCode(t, err, apierr.BadRequest, http.StatusBadRequest)
		}
	}
}

func paths(ms []FileInfo, root string) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, strings.TrimPrefix(m.Path, root))
	}
	return out
}

func TestGlob(t *testing.T) {
	root := makeTree(t, map[string]string{
		"a.py":              "print(1)\n",
		"b.txt":             "hello",
		".hidden.py":        "",
		"src/c.py":          "x",
		"src/deep/d.py":     "x",
		"src/deep/e.txt":    "x",
		"empty/":            "",
		"outside/linked.py": "x",
	})
	// A symlinked directory is listed, never walked into.
	if err := os.Symlink(filepath.Join(root, "outside"), filepath.Join(root, "src", "link")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		pattern   string
		limit     int
		want      []string
		truncated bool
	}{
		{"bare pattern matches the top level only", "*.py", 0, []string{"/.hidden.py", "/a.py"}, false},
		{"star lists immediate entries", "*", 0, []string{"/.hidden.py", "/a.py", "/b.txt", "/empty", "/outside", "/src"}, false},
		{"double star matches at any depth", "**/*.py", 0, []string{"/.hidden.py", "/a.py", "/outside/linked.py", "/src/c.py", "/src/deep/d.py"}, false},
		{"path pattern", "src/*", 0, []string{"/src/c.py", "/src/deep", "/src/link"}, false},
		{"symlinked dir not followed", "src/link/*", 0, []string{}, false},
		{"double star lists directories too", "src/**", 0, []string{"/src", "/src/c.py", "/src/deep", "/src/deep/d.py", "/src/deep/e.txt", "/src/link"}, false},
		{"no match", "*.go", 0, []string{}, false},
		{"limit truncates", "**/*.py", 2, []string{"/.hidden.py", "/a.py"}, true},
		{"limit equal to the count is complete", "*.py", 2, []string{"/.hidden.py", "/a.py"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Glob(context.Background(), GlobRequest{Pattern: tc.pattern, Path: root, Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			if got := paths(res.Matches, root); !reflect.DeepEqual(got, tc.want) || res.Truncated != tc.truncated {
				t.Fatalf("got %q truncated=%v, want %q truncated=%v", got, res.Truncated, tc.want, tc.truncated)
			}
		})
	}
}

func TestGlobFileInfo(t *testing.T) {
	root := makeTree(t, map[string]string{"f.txt": "12345", "d/x": ""})
	mtime := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := os.Chtimes(filepath.Join(root, "f.txt"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f.txt", filepath.Join(root, "l.txt")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("nowhere", filepath.Join(root, "dangling")); err != nil {
		t.Fatal(err)
	}
	res, err := Glob(context.Background(), GlobRequest{Pattern: "*", Path: root + "/"})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]FileInfo{}
	for _, m := range res.Matches {
		if !filepath.IsAbs(m.Path) || filepath.Dir(m.Path) != root {
			t.Fatalf("path %q is not absolute under %s", m.Path, root)
		}
		if _, err := time.Parse(time.RFC3339, m.ModifiedAt); err != nil {
			t.Fatalf("modified_at %q: %v", m.ModifiedAt, err)
		}
		byName[filepath.Base(m.Path)] = m
	}
	if f := byName["f.txt"]; f.IsDir || f.SizeBytes != 5 || f.ModifiedAt != "2024-05-06T07:08:09.123Z" {
		t.Fatalf("f.txt: %+v", f)
	}
	if d := byName["d"]; !d.IsDir || d.SizeBytes != 0 {
		t.Fatalf("d: %+v", d)
	}
	if l := byName["l.txt"]; l.IsDir || l.SizeBytes != 5 {
		t.Fatalf("symlink to a file is described by its target: %+v", l)
	}
	if _, ok := byName["dangling"]; !ok {
		t.Fatalf("dangling symlink missing from %+v", res.Matches)
	}
	// JSON field names of the LangSmith FileInfo / GlobResult.
	j, _ := json.Marshal(GlobResult{Matches: []FileInfo{byName["f.txt"]}})
	want := `{"matches":[{"path":"` + root + `/f.txt","is_dir":false,"size_bytes":5,"modified_at":"2024-05-06T07:08:09.123Z"}],"truncated":false}`
	if string(j) != want {
		t.Fatalf("json %s, want %s", j, want)
	}
}

func TestSearchErrors(t *testing.T) {
	root := makeTree(t, map[string]string{"f.txt": "x"})
	ctx := context.Background()
	tests := []struct {
		name   string
		run    func() error
		code   string
		status int
	}{
		{"glob missing path", func() error {
			_, err := Glob(ctx, GlobRequest{Pattern: "*", Path: root + "/nope"})
			return err
		}, apierr.FileNotFound, 404},
		{"grep missing path", func() error {
			_, err := Grep(ctx, GrepRequest{Pattern: "x", Path: root + "/nope"})
			return err
		}, apierr.FileNotFound, 404},
		{"glob relative path", func() error {
			_, err := Glob(ctx, GlobRequest{Pattern: "*", Path: "tmp"})
			return err
		}, apierr.BadRequest, 400},
		{"grep relative path", func() error {
			_, err := Grep(ctx, GrepRequest{Pattern: "x", Path: "./tmp"})
			return err
		}, apierr.BadRequest, 400},
		{"glob without path", func() error {
			_, err := Glob(ctx, GlobRequest{Pattern: "*"})
			return err
		}, apierr.BadRequest, 400},
		{"glob of a file", func() error {
			_, err := Glob(ctx, GlobRequest{Pattern: "*", Path: root + "/f.txt"})
			return err
		}, apierr.NotADirectory, 400},
		{"glob empty pattern", func() error {
			_, err := Glob(ctx, GlobRequest{Path: root})
			return err
		}, apierr.BadRequest, 400},
		{"glob bad pattern", func() error {
			_, err := Glob(ctx, GlobRequest{Pattern: "[", Path: root})
			return err
		}, apierr.BadRequest, 400},
		{"grep empty pattern", func() error {
			_, err := Grep(ctx, GrepRequest{Path: root})
			return err
		}, apierr.BadRequest, 400},
		{"grep bad glob", func() error {
			_, err := Grep(ctx, GrepRequest{Pattern: "x", Path: root, Glob: "[a-"})
			return err
		}, apierr.BadRequest, 400},
		{"negative limit", func() error {
			_, err := Glob(ctx, GlobRequest{Pattern: "*", Path: root, Limit: -1})
			return err
		}, apierr.BadRequest, 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { wantCode(t, tc.run(), tc.code, tc.status) })
	}
}

func TestSearchLimit(t *testing.T) {
	tests := []struct{ in, want int }{{0, DefaultSearchLimit}, {1, 1}, {10000, 10000}, {10001, MaxSearchLimit}, {1 << 40, MaxSearchLimit}}
	for _, tc := range tests {
		if got, err := searchLimit(tc.in); err != nil || got != tc.want {
			t.Errorf("searchLimit(%d) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestGlobDefaultLimit(t *testing.T) {
	root := t.TempDir()
	for i := 0; i < DefaultSearchLimit+5; i++ {
		if err := os.WriteFile(filepath.Join(root, "f"+itoa(i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Glob(context.Background(), GlobRequest{Pattern: "*", Path: root})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Matches) != DefaultSearchLimit || !res.Truncated {
		t.Fatalf("got %d matches truncated=%v", len(res.Matches), res.Truncated)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func grepLines(ms []GrepMatch, root string) []string {
	out := []string{}
	for _, m := range ms {
		out = append(out, strings.TrimPrefix(m.Path, root)+":"+itoa(m.Line)+":"+m.Text)
	}
	return out
}

func TestGrep(t *testing.T) {
	long := strings.Repeat("é", GrepMaxLineChars+50) + "needle"
	root := makeTree(t, map[string]string{
		"a.py":           "import re\nx = re.compile('a.b*')\n# a.b* again\nab\n",
		"b.txt":          "a.b* in text\n",
		"src/c.py":       "first\r\nsecond a.b*\r\n",
		"src/deep/d.py":  "no\nno\nyes a.b*",
		"bin.dat":        "a.b*\x00binary",
		"long.txt":       "needle " + long + "\n",
		"out/linked.txt": "a.b* behind a link",
	})
	big := make([]byte, GrepMaxFileBytes+1)
	copy(big, "a.b*\n")
	for i := 5; i < len(big); i++ {
		big[i] = 'z'
	}
	if err := os.WriteFile(filepath.Join(root, "big.txt"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "out"), filepath.Join(root, "src", "dirlink")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(root, "b.txt"), filepath.Join(root, "src", "filelink.txt")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		pattern   string
		path      string
		glob      string
		limit     int
		want      []string
		truncated bool
	}{
		{"literal, regex characters are plain", "a.b*", "", "", 0, []string{
			"/a.py:2:x = re.compile('a.b*')", "/a.py:3:# a.b* again", "/b.txt:1:a.b* in text",
			"/out/linked.txt:1:a.b* behind a link", "/src/c.py:2:second a.b*", "/src/deep/d.py:3:yes a.b*",
		}, false},
		{"bare glob matches base names at any depth", "a.b*", "", "*.py", 0, []string{
			"/a.py:2:x = re.compile('a.b*')", "/a.py:3:# a.b* again", "/src/c.py:2:second a.b*", "/src/deep/d.py:3:yes a.b*",
		}, false},
		{"glob with a slash matches the relative path", "a.b*", "", "src/*.py", 0, []string{"/src/c.py:2:second a.b*"}, false},
		{"glob with double star", "a.b*", "", "src/**/*.py", 0, []string{"/src/c.py:2:second a.b*", "/src/deep/d.py:3:yes a.b*"}, false},
		{"no regex semantics", "a.*b", "", "", 0, []string{}, false},
		{"case-sensitive", "IMPORT", "", "", 0, []string{}, false},
		{"limit truncates", "a.b*", "", "", 2, []string{"/a.py:2:x = re.compile('a.b*')", "/a.py:3:# a.b* again"}, true},
		{"limit equal to the count is complete", "a.b*", "", "*.py", 4, []string{
			"/a.py:2:x = re.compile('a.b*')", "/a.py:3:# a.b* again", "/src/c.py:2:second a.b*", "/src/deep/d.py:3:yes a.b*",
		}, false},
		{"a file as the path", "a.b*", "/src/deep/d.py", "", 0, []string{"/src/deep/d.py:3:yes a.b*"}, false},
		{"a file as the path, glob not matching", "a.b*", "/src/deep/d.py", "*.txt", 0, []string{}, false},
		{"a subdirectory as the path", "second", "/src", "", 0, []string{"/src/c.py:2:second a.b*"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Grep(context.Background(), GrepRequest{Pattern: tc.pattern, Path: root + tc.path, Glob: tc.glob, Limit: tc.limit})
			if err != nil {
				t.Fatal(err)
			}
			if got := grepLines(res.Matches, root); !reflect.DeepEqual(got, tc.want) || res.Truncated != tc.truncated {
				t.Fatalf("got %q truncated=%v, want %q truncated=%v", got, res.Truncated, tc.want, tc.truncated)
			}
		})
	}
	t.Run("long lines are cut to 2000 characters", func(t *testing.T) {
		res, err := Grep(context.Background(), GrepRequest{Pattern: "needle", Path: root, Glob: "long.txt"})
		if err != nil || len(res.Matches) != 1 {
			t.Fatalf("%v %+v", err, res)
		}
		m := res.Matches[0]
		if m.Line != 1 || len([]rune(m.Text)) != GrepMaxLineChars || !strings.HasPrefix(m.Text, "needle éé") {
			t.Fatalf("line %d, %d chars: %.40q", m.Line, len([]rune(m.Text)), m.Text)
		}
		j, _ := json.Marshal(res)
		if !strings.HasPrefix(string(j), `{"matches":[{"path":"`+root+`/long.txt","line":1,"text":"needle `) || !strings.HasSuffix(string(j), `"}],"truncated":false}`) {
			t.Fatalf("json %.120s", j)
		}
	})
}

func TestLineText(t *testing.T) {
	tests := []struct{ in, want string }{
		{"plain", "plain"},
		{"crlf\r", "crlf"},
		{strings.Repeat("x", 2500), strings.Repeat("x", 2000)},
		{strings.Repeat("日", 2001), strings.Repeat("日", 2000)},
		{"\xff\xfe" + strings.Repeat("y", 2000), "\xff\xfe" + strings.Repeat("y", 1998)},
	}
	for _, tc := range tests {
		if got := lineText([]byte(tc.in)); got != tc.want {
			t.Errorf("lineText(%.20q) = %.20q (%d bytes), want %d bytes", tc.in, got, len(got), len(tc.want))
		}
	}
}

func TestSearchDeadlineAndCancel(t *testing.T) {
	root := makeTree(t, map[string]string{"a.txt": "x", "b/c.txt": "x"})
	t.Run("deadline", func(t *testing.T) {
		old := SearchDeadline
		SearchDeadline = -time.Second
		defer func() { SearchDeadline = old }()
		g, err := Glob(context.Background(), GlobRequest{Pattern: "**", Path: root})
		if err != nil || !g.Truncated || len(g.Matches) != 0 {
			t.Fatalf("glob %v %+v", err, g)
		}
		r, err := Grep(context.Background(), GrepRequest{Pattern: "x", Path: root})
		if err != nil || !r.Truncated || len(r.Matches) != 0 {
			t.Fatalf("grep %v %+v", err, r)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		g, err := Glob(ctx, GlobRequest{Pattern: "**", Path: root})
		if err != nil || !g.Truncated {
			t.Fatalf("glob %v %+v", err, g)
		}
	})
}

func TestSearchFromRootSkipsPseudoFilesystems(t *testing.T) {
	// From / the entries are listed, but /proc, /sys and /dev are not walked.
	res, err := Glob(context.Background(), GlobRequest{Pattern: "*", Path: "/"})
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, m := range res.Matches {
		found[m.Path] = true
	}
	if !found["/proc"] {
		t.Fatalf("/proc not listed: %v", paths(res.Matches, ""))
	}
	for _, pattern := range []string{"proc/*", "sys/*", "dev/**/*"} {
		res, err := Glob(context.Background(), GlobRequest{Pattern: pattern, Path: "/"})
		if err != nil || len(res.Matches) != 0 {
			t.Fatalf("%s: %v %v", pattern, err, paths(res.Matches, ""))
		}
	}
	g, err := Grep(context.Background(), GrepRequest{Pattern: "Name:", Path: "/", Glob: "proc/self/status"})
	if err != nil || len(g.Matches) != 0 {
		t.Fatalf("grep from /: %v %+v", err, g)
	}
	// Asked for explicitly, they are searched like any directory.
	if _, err := os.Stat("/proc/self/status"); err == nil {
		g, err := Grep(context.Background(), GrepRequest{Pattern: "Name:", Path: "/proc/self", Glob: "status", Limit: 1})
		if err != nil || len(g.Matches) != 1 || g.Matches[0].Path != "/proc/self/status" || g.Matches[0].Line != 1 {
			t.Fatalf("grep /proc/self: %v %+v", err, g)
		}
	}
}

// The handlers decode the JSON body; unknown fields are ignored.
func TestSearchJSONRequest(t *testing.T) {
	root := makeTree(t, map[string]string{"x/a.md": "hit\n"})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req GrepRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			apierr.Write(w, apierr.New(apierr.BadRequest, "%v", err))
			return
		}
		res, err := Grep(r.Context(), req)
		if err != nil {
			apierr.Write(w, err)
			return
		}
		apierr.WriteJSON(w, http.StatusOK, res)
	}))
	defer ts.Close()
	body := `{"pattern":"hit","path":"` + root + `","glob":"*.md","limit":5,"extra":true}`
	resp, err := http.Post(ts.URL, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]interface{}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := map[string]interface{}{
		"matches":   []interface{}{map[string]interface{}{"path": root + "/x/a.md", "line": float64(1), "text": "hit"}},
		"truncated": false,
	}
	if resp.StatusCode != 200 || !reflect.DeepEqual(got, want) {
		t.Fatalf("%d %v", resp.StatusCode, got)
	}
}
