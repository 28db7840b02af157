package main

import (
	"os"
	"strings"
	"testing"
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
		}, config{token: "t", addr: "127.0.0.1:0", cwd: "/work", ringBytes: 1024}, false},
		{"bad ring size", map[string]string{"SANDBAR_AGENT_RING_BYTES": "lots"}, config{}, true},
		{"zero ring size", map[string]string{"SANDBAR_AGENT_RING_BYTES": "0"}, config{}, true},
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
			if got.token != tt.want.token || got.addr != tt.want.addr || got.cwd != tt.want.cwd || got.ringBytes != tt.want.ringBytes {
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
