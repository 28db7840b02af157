package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"sandbar/agent/internal/initproc"
)

func TestLoadConfig(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    config
		wantErr bool
	}{
		{"defaults", map[string]string{"SANDBAR_AGENT_TOKEN": "tok"},
			config{token: "tok", addr: defaultAddr, cwd: "/", ringBytes: 4 << 20}, false},
		{"all set", map[string]string{
			"SANDBAR_AGENT_TOKEN": "t", "SANDBAR_AGENT_ADDR": "127.0.0.1:0",
			"SANDBAR_AGENT_CWD": "/work", "SANDBAR_AGENT_RING_BYTES": "1024",
			"SANDBAR_AGENT_USER": "app:staff", "SANDBAR_AGENT_THREADS": "32",
		}, config{token: "t", addr: "127.0.0.1:0", cwd: "/work", user: "app:staff", ringBytes: 1024, threads: 32}, false},
		{"bad ring size", map[string]string{"SANDBAR_AGENT_RING_BYTES": "lots"}, config{}, true},
		{"zero ring size", map[string]string{"SANDBAR_AGENT_RING_BYTES": "0"}, config{}, true},
		{"bad thread count", map[string]string{"SANDBAR_AGENT_THREADS": "-1"}, config{}, true},
		{"too many threads", map[string]string{"SANDBAR_AGENT_THREADS": "5000"}, config{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			t.Setenv("IMAGE_VAR", "kept")
			got, err := loadConfig()
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.token != tt.want.token || got.addr != tt.want.addr || got.cwd != tt.want.cwd || got.user != tt.want.user || got.ringBytes != tt.want.ringBytes {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for _, kv := range append(os.Environ(), got.baseEnv...) {
				if strings.HasPrefix(kv, "SANDBAR_AGENT_") {
					t.Fatalf("%s left in the environment", kv)
				}
			}
			found := false
			for _, kv := range got.baseEnv {
				found = found || kv == "IMAGE_VAR=kept"
			}
			if !found {
				t.Fatalf("image variable missing from %q", got.baseEnv)
			}
		})
	}
}

// TestDefaultUserFromEnv follows SANDBAR_AGENT_USER from the environment to
// the commands the agent runs.
func TestDefaultUserFromEnv(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch users")
	}
	// Numeric, so that no passwd entry is needed on this machine.
	t.Setenv("SANDBAR_AGENT_USER", "4242:4343")
	t.Setenv("SANDBAR_AGENT_TOKEN", "tok")
	t.Setenv("SANDBAR_AGENT_CWD", "/")
	cfg, err := loadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := os.LookupEnv("SANDBAR_AGENT_USER"); ok {
		t.Fatal("SANDBAR_AGENT_USER left in the environment")
	}
	ts := httptest.NewServer(newHandler(cfg, initproc.Default()))
	defer ts.Close()
	for user, want := range map[string]string{"": "4242 4343\n", "root": "0 0\n", "0": "0 0\n"} {
		body := map[string]string{"command": "echo $(id -u) $(id -g)"}
		if user != "" {
			body["user"] = user
		}
		data, _ := json.Marshal(body)
		req, _ := http.NewRequest("POST", ts.URL+"/exec", bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Stdout   string `json:"stdout"`
			ExitCode int    `json:"exit_code"`
		}
		err = json.NewDecoder(resp.Body).Decode(&res)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || res.Stdout != want {
			t.Fatalf("user %q: %d %+v %v, want stdout %q", user, resp.StatusCode, res, err, want)
		}
	}
}
