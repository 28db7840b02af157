package frame

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Frame
		want []byte // encoded header, nil to skip the check
	}{
		{"started", Started(42), []byte{1, 0, 0, 0, 0, 0, 0, 0, 42, 0, 0, 0, 0}},
		{"stdout", Output(false, 7, []byte("hi")), []byte{2, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 2}},
		{"stderr", Output(true, 1<<40, []byte("x")), []byte{3, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1}},
		{"exit negative", Exit(-1, ExitInfo{Reason: ReasonKilled, Signal: 9}),
			[]byte{4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
		{"error", Error(ErrCommandTimeout, "timed out"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, tt.in); err != nil {
				t.Fatal(err)
			}
			if tt.want != nil && !bytes.HasPrefix(buf.Bytes(), tt.want) {
				t.Fatalf("encoded %v, want prefix %v", buf.Bytes(), tt.want)
			}
			got, err := Read(&buf)
			if err != nil {
				t.Fatal(err)
			}
			if got.Type != tt.in.Type || got.A != tt.in.A || !bytes.Equal(got.Payload, tt.in.Payload) {
				t.Fatalf("got %+v, want %+v", got, tt.in)
			}
			if _, err := Read(&buf); err != io.EOF {
				t.Fatalf("second read: %v, want EOF", err)
			}
		})
	}
}

func TestExitPayload(t *testing.T) {
	f := Exit(-1, ExitInfo{Reason: ReasonTimeout, Signal: 9})
	if f.ExitCode() != -1 {
		t.Fatalf("exit code %d", f.ExitCode())
	}
	var info map[string]interface{}
	if err := json.Unmarshal(f.Payload, &info); err != nil {
		t.Fatal(err)
	}
	if info["reason"] != "timeout" || info["signal"] != float64(9) {
		t.Fatalf("payload %s", f.Payload)
	}
	f = Exit(3, ExitInfo{Reason: ReasonExited})
	if string(f.Payload) != `{"reason":"exited"}` || f.ExitCode() != 3 {
		t.Fatalf("payload %s code %d", f.Payload, f.ExitCode())
	}
}

func TestReadErrors(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"short header", []byte{2, 0, 0}, io.ErrUnexpectedEOF},
		{"short payload", []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 'a'}, io.ErrUnexpectedEOF},
		{"too large", []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0, 0, 0}, ErrPayloadTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Read(bytes.NewReader(tt.in))
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
		})
	}
}

func TestCompleteUTF8(t *testing.T) {
	euro := []byte("€")  // e2 82 ac
	emoji := []byte("😀") // f0 9f 98 80
	tests := []struct {
		name string
		in   []byte
		want int
	}{
		{"empty", nil, 0},
		{"ascii", []byte("abc"), 3},
		{"complete 3-byte", append([]byte("a"), euro...), 4},
		{"1 of 3", append([]byte("a"), euro[:1]...), 1},
		{"2 of 3", append([]byte("a"), euro[:2]...), 1},
		{"only partial", euro[:2], 0},
		{"3 of 4", append([]byte("ab"), emoji[:3]...), 2},
		{"complete 4-byte", emoji, 4},
		{"invalid lead byte passes", []byte{'a', 0xff}, 2},
		{"invalid continuation passes", []byte{'a', 0xe2, 'b'}, 3},
		{"bad second byte passes", []byte{'a', 0xe0, 0x80}, 3},
		{"lone continuation passes", []byte{'a', 0x80}, 2},
		{"many continuations pass", []byte{0x80, 0x80, 0x80, 0x80}, 4},
		{"surrogate prefix passes", []byte{0xed, 0xa0}, 2},
		{"valid prefix after invalid", []byte{0xff, 0xf0, 0x9f}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CompleteUTF8(tt.in); got != tt.want {
				t.Fatalf("CompleteUTF8(% x) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}
