package pty

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestOpenResize(t *testing.T) {
	tests := []struct {
		name       string
		cols, rows uint16
		toC, toR   uint16
	}{
		{"default", DefaultCols, DefaultRows, 132, 43},
		{"tiny", 1, 1, 200, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, s, name, err := Open(tt.cols, tt.rows)
			if err != nil {
				t.Fatalf("open pty: %v", err)
			}
			defer m.Close()
			defer syscall.Close(s)
			if !strings.HasPrefix(name, "/dev/pts/") {
				t.Fatalf("name %q", name)
			}
			c, r, err := Size(m)
			if err != nil || c != tt.cols || r != tt.rows {
				t.Fatalf("size %dx%d err %v", c, r, err)
			}
			if err := Resize(m, tt.toC, tt.toR); err != nil {
				t.Fatal(err)
			}
			if c, r, _ = Size(m); c != tt.toC || r != tt.toR {
				t.Fatalf("after resize %dx%d", c, r)
			}
		})
	}
}

func TestSlaveToMasterAndCloseUnblocksRead(t *testing.T) {
	m, s, _, err := Open(DefaultCols, DefaultRows)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	slave := os.NewFile(uintptr(s), "slave")
	if _, err := slave.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	var got []byte
	for len(got) < 4 { // the line discipline may hand it over in pieces
		n, err := m.Read(buf)
		if err != nil {
			t.Fatalf("read after %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if string(got) != "hi\r\n" {
		t.Fatalf("read %q", got)
	}
	slave.Close()
	done := make(chan error, 1)
	go func() {
		_, err := m.Read(buf)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read after slave close succeeded")
		}
	case <-time.After(2 * time.Second):
		m.Close()
		t.Fatal("read did not fail after slave close")
	}
	m.Close()
}
