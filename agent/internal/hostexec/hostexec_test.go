package hostexec

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestServe(t *testing.T) {
	log := filepath.Join(t.TempDir(), "log")
	reqs := []Request{
		{ID: 1, Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}},
		{ID: 2, Argv: []string{"cat"}, Input: []byte("hello")},
		{ID: 3, Argv: []string{"sandbar-no-such-program"}},
		{ID: 4, Argv: []string{"sleep", "5"}, TimeoutMs: 50},
		{ID: 5, Argv: []string{"pwd"}, Cwd: "/"},
		{ID: 6, Argv: []string{"sh", "-c", "echo $X"}, Env: []string{"X=y", "PATH=/usr/bin:/bin"}},
		{ID: 7, Argv: []string{"sh", "-c", "echo logged"}, LogFile: log, Detached: true},
		{ID: 8, Argv: nil},
	}
	var in bytes.Buffer
	enc := json.NewEncoder(&in)
	for _, r := range reqs {
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	start := time.Now()
	if err := Serve(&in, &out); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 3*time.Second {
		t.Fatalf("the timeout did not kill: %v", time.Since(start))
	}
	got := map[int64]Response{}
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r Response
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		got[r.ID] = r
	}
	if len(got) != len(reqs) {
		t.Fatalf("%d responses for %d requests: %+v", len(got), len(reqs), got)
	}
	check := func(id int64, ok bool) {
		t.Helper()
		if !ok {
			t.Errorf("response %d: %+v (stdout %q stderr %q)", id, got[id], got[id].Stdout, got[id].Stderr)
		}
	}
	check(1, got[1].Code == 3 && string(got[1].Stdout) == "out\n" && string(got[1].Stderr) == "err\n")
	check(2, got[2].Code == 0 && string(got[2].Stdout) == "hello")
	check(3, got[3].Errno == "ENOENT" && got[3].Error != "")
	check(4, got[4].Code == 128 && got[4].Signal != "")
	check(5, string(got[5].Stdout) == "/\n")
	check(6, string(got[6].Stdout) == "y\n")
	data, _ := os.ReadFile(log)
	check(7, got[7].Code == 0 && len(got[7].Stdout) == 0 && strings.TrimSpace(string(data)) == "logged")
	check(8, got[8].Errno == "EINVAL")
}
