// Package frame encodes and decodes the binary frames of a session stream.
//
// Each frame is 1 byte type, 8 bytes big-endian u64 "a", 4 bytes big-endian
// u32 payload length, then the payload (see docs/agent-protocol.md).
package frame

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Frame types.
const (
	TypeStarted byte = 1
	TypeStdout  byte = 2
	TypeStderr  byte = 3
	TypeExit    byte = 4
	TypeError   byte = 5
)

// HeaderSize is the size of a frame header in bytes.
const HeaderSize = 13

// MaxPayload bounds the payload size Read accepts.
const MaxPayload = 16 << 20

// Exit reasons carried in the exit frame payload.
const (
	ReasonExited      = "exited"
	ReasonKilled      = "killed"
	ReasonTimeout     = "timeout"
	ReasonIdleTimeout = "idle_timeout"
)

// Error codes carried in the error frame payload.
const (
	ErrCommandTimeout = "CommandTimeout"
	ErrCommandError   = "CommandError"
)

// Frame is one decoded frame.
type Frame struct {
	Type    byte
	A       uint64
	Payload []byte
}

// ExitInfo is the JSON payload of an exit frame.
type ExitInfo struct {
	Reason string `json:"reason"`
	Signal int    `json:"signal,omitempty"`
}

// ErrorInfo is the JSON payload of an error frame.
type ErrorInfo struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// ErrPayloadTooLarge is returned by Read for frames above MaxPayload.
var ErrPayloadTooLarge = errors.New("frame payload too large")

// Append appends the encoding of f to dst and returns the extended slice.
func Append(dst []byte, f Frame) []byte {
	var hdr [HeaderSize]byte
	hdr[0] = f.Type
	binary.BigEndian.PutUint64(hdr[1:9], f.A)
	binary.BigEndian.PutUint32(hdr[9:13], uint32(len(f.Payload)))
	dst = append(dst, hdr[:]...)
	return append(dst, f.Payload...)
}

// Write writes the encoding of f to w in a single Write call.
func Write(w io.Writer, f Frame) error {
	if _, err := w.Write(Append(make([]byte, 0, HeaderSize+len(f.Payload)), f)); err != nil {
		return fmt.Errorf("write frame type %d: %w", f.Type, err)
	}
	return nil
}

// Read decodes one frame from r. It returns io.EOF when r ends cleanly
// before a frame and io.ErrUnexpectedEOF when it ends inside one.
func Read(r io.Reader) (Frame, error) {
	var hdr [HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return Frame{}, err
	}
	f := Frame{Type: hdr[0], A: binary.BigEndian.Uint64(hdr[1:9])}
	n := binary.BigEndian.Uint32(hdr[9:13])
	if n > MaxPayload {
		return Frame{}, fmt.Errorf("read frame type %d: %d bytes: %w", f.Type, n, ErrPayloadTooLarge)
	}
	f.Payload = make([]byte, n)
	if _, err := io.ReadFull(r, f.Payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, fmt.Errorf("read frame payload: %w", err)
	}
	return f, nil
}

// Started builds a started frame for pid.
func Started(pid int) Frame {
	return Frame{Type: TypeStarted, A: uint64(pid)}
}

// Output builds a stdout (stderr=false) or stderr frame.
func Output(stderr bool, offset uint64, payload []byte) Frame {
	t := TypeStdout
	if stderr {
		t = TypeStderr
	}
	return Frame{Type: t, A: offset, Payload: payload}
}

// Exit builds an exit frame; code is stored as int64 two's complement.
func Exit(code int, info ExitInfo) Frame {
	payload, _ := json.Marshal(info) // cannot fail for this type
	return Frame{Type: TypeExit, A: uint64(int64(code)), Payload: payload}
}

// Error builds an error frame.
func Error(code, message string) Frame {
	payload, _ := json.Marshal(ErrorInfo{Error: code, Message: message})
	return Frame{Type: TypeError, Payload: payload}
}

// ExitCode interprets an exit frame's "a" field.
func (f Frame) ExitCode() int {
	return int(int64(f.A))
}

// CompleteUTF8 returns the length of the longest prefix of b that does not
// end inside an incomplete, so far valid, UTF-8 sequence. Callers hold back
// b[n:] until more bytes arrive (or send it when the stream has ended).
// Invalid bytes are never held back.
func CompleteUTF8(b []byte) int {
	for k := 1; k <= utf8.UTFMax-1 && k <= len(b); k++ {
		i := len(b) - k
		if !utf8.RuneStart(b[i]) {
			continue
		}
		if !utf8.FullRune(b[i:]) {
			return i
		}
		break
	}
	return len(b)
}
