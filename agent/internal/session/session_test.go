package session

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"sandbar/agent/internal/frame"
	"sandbar/agent/internal/initproc"
	"sandbar/agent/internal/proc"
)

func newManager(t *testing.T, ringBytes int) *Manager {
	t.Helper()
	return NewManager(Config{
		Proc:      proc.Config{BaseEnv: []string{"PATH=/usr/bin:/bin"}, DefaultCwd: "/"},
		Reaper:    initproc.Default(),
		RingBytes: ringBytes,
	})
}

func create(t *testing.T, m *Manager, req CreateRequest) *Session {
	t.Helper()
	s, created, err := m.Create(req)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Fatalf("session %q already existed", req.CommandID)
	}
	t.Cleanup(s.Kill)
	return s
}

// collect streams s to the end and decodes the frames.
func collect(t *testing.T, s *Session, outOff, errOff uint64) []frame.Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var buf bytes.Buffer
	if err := s.Stream(ctx, &buf, func() {}, outOff, errOff); err != nil {
		t.Fatal(err)
	}
	var fs []frame.Frame
	for {
		f, err := frame.Read(&buf)
		if err == io.EOF {
			return fs
		}
		if err != nil {
			t.Fatal(err)
		}
		fs = append(fs, f)
	}
}

func TestStreamUTF8Boundaries(t *testing.T) {
	m := newManager(t, 0)
	// "€" is \342\202\254; the first two bytes arrive alone.
	s := create(t, m, CreateRequest{CommandID: "utf8", Command: `printf 'a\342\202'; sleep 0.3; printf '\254b'`})
	fs := collect(t, s, 0, 0)
	var all []byte
	for _, f := range fs {
		if f.Type != frame.TypeStdout {
			continue
		}
		if !utf8.Valid(f.Payload) {
			t.Fatalf("payload %q at %d is not valid UTF-8", f.Payload, f.A)
		}
		if f.A != uint64(len(all)) {
			t.Fatalf("offset %d, want %d", f.A, len(all))
		}
		all = append(all, f.Payload...)
	}
	if string(all) != "a€b" {
		t.Fatalf("output %q", all)
	}
}

func TestStreamInvalidAndTrailingBytesPass(t *testing.T) {
	m := newManager(t, 0)
	// An invalid byte, then an incomplete sequence at EOF: both are sent.
	s := create(t, m, CreateRequest{CommandID: "invalid", Command: `printf 'x\377y\342\202'`})
	var all []byte
	for _, f := range collect(t, s, 0, 0) {
		if f.Type == frame.TypeStdout {
			all = append(all, f.Payload...)
		}
	}
	if string(all) != "x\xffy\xe2\x82" {
		t.Fatalf("output %q", all)
	}
}

// blockingWriter blocks every Write until released, like a client that
// stopped reading with full TCP buffers.
type blockingWriter struct {
	release chan struct{}
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.buf.Write(p)
}

func TestSlowReaderDoesNotBlockCommand(t *testing.T) {
	m := newManager(t, 4096)
	s := create(t, m, CreateRequest{CommandID: "slow", Command: "head -c 1000000 /dev/zero; echo end"})
	w := &blockingWriter{release: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- s.Stream(context.Background(), w, func() {}, 0, 0) }()
	// The command finishes although the reader is stuck on its first write.
	deadline := time.Now().Add(5 * time.Second)
	for s.Info().Running {
		if time.Now().After(deadline) {
			t.Fatal("command blocked behind a slow reader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(w.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var fs []frame.Frame
	for {
		f, err := frame.Read(&w.buf)
		if err != nil {
			break
		}
		fs = append(fs, f)
	}
	// started, then the tail of the output from where the ring starts, exit.
	if len(fs) < 3 || fs[0].Type != frame.TypeStarted || fs[len(fs)-1].Type != frame.TypeExit {
		t.Fatalf("frames %v", fs)
	}
	first := fs[1]
	if first.Type != frame.TypeStdout || first.A != 1000004-4096 {
		t.Fatalf("first output frame type %d offset %d, want offset %d", first.Type, first.A, 1000004-4096)
	}
	var tail []byte
	for _, f := range fs[1 : len(fs)-1] {
		tail = append(tail, f.Payload...)
	}
	if len(tail) != 4096 || !strings.HasSuffix(string(tail), "end\n") {
		t.Fatalf("tail len %d", len(tail))
	}
}

func TestCreateValidation(t *testing.T) {
	m := newManager(t, 0)
	tests := []struct {
		name string
		req  CreateRequest
	}{
		{"empty id", CreateRequest{Command: "true"}},
		{"slash in id", CreateRequest{CommandID: "a/b", Command: "true"}},
		{"empty command", CreateRequest{CommandID: "x1"}},
		{"negative timeout", CreateRequest{CommandID: "x2", Command: "true", TimeoutSeconds: -2}},
		{"bad idle", CreateRequest{CommandID: "x3", Command: "true", IdleTimeoutSeconds: -5}},
		{"bad ttl", CreateRequest{CommandID: "x4", Command: "true", TTLSeconds: -0.5}},
		{"bad cols", CreateRequest{CommandID: "x5", Command: "true", PTY: true, Cols: 70000}},
		{"missing cwd", CreateRequest{CommandID: "x6", Command: "true", Cwd: "/no/such/dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := m.Create(tt.req); !errors.Is(err, proc.ErrInvalid) {
				t.Fatalf("err %v, want invalid", err)
			}
		})
	}
	if len(m.List()) != 0 {
		t.Fatalf("sessions created: %v", m.List())
	}
}

func TestIDSetForgetsOldest(t *testing.T) {
	s := newIDSet(3)
	for _, id := range []string{"a", "b", "c", "a", "d", "e"} {
		s.add(id)
	}
	for id, want := range map[string]bool{"a": false, "b": false, "c": true, "d": true, "e": true} {
		if s.has(id) != want {
			t.Fatalf("has(%q) = %v", id, !want)
		}
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(entries)
}

func TestNoFDLeaks(t *testing.T) {
	m := newManager(t, 0)
	// Warm up lazily opened descriptors (epoll, signal pipes).
	collect(t, create(t, m, CreateRequest{CommandID: "warm", Command: "true"}), 0, 0)
	before := openFDs(t)
	for i := 0; i < 10; i++ {
		for _, p := range []bool{false, true} {
			s := create(t, m, CreateRequest{CommandID: fmt.Sprintf("fd-%d-%v", i, p), Command: "echo x; echo y >&2", PTY: p})
			collect(t, s, 0, 0)
		}
	}
	// Pipes and ptys are closed by the pumps just after the exit frame: give them a moment.
	deadline := time.Now().Add(3 * time.Second)
	for {
		after := openFDs(t)
		if after <= before {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open before, %d after", before, after)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pacedWriter accepts each write after a short delay, like a client that reads
// steadily but slower than a burst of output.
type pacedWriter struct {
	buf   bytes.Buffer
	delay time.Duration
}

func (w *pacedWriter) Write(p []byte) (int, error) {
	time.Sleep(w.delay)
	return w.buf.Write(p)
}

func TestSteadyReaderLosesNothingOfABurst(t *testing.T) {
	m := newManager(t, 64<<10)
	// ~2.7 MB as fast as the pipe allows: 40 times the ring.
	s := create(t, m, CreateRequest{CommandID: "burst", Command: "head -c 2000000 /dev/zero | od -v -An -tx1 | head -c 2700000"})
	w := &pacedWriter{delay: time.Millisecond}
	if err := s.Stream(context.Background(), w, func() {}, 0, 0); err != nil {
		t.Fatal(err)
	}
	var next uint64
	var total int
	for {
		f, err := frame.Read(&w.buf)
		if err != nil {
			break
		}
		if f.Type != frame.TypeStdout {
			continue
		}
		if f.A != next {
			t.Fatalf("gap: frame at %d, expected %d", f.A, next)
		}
		next = f.A + uint64(len(f.Payload))
		total += len(f.Payload)
	}
	if total != 2700000 {
		t.Fatalf("got %d bytes, want 2700000", total)
	}
}
