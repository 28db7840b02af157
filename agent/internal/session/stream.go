package session

import (
	"context"
	"fmt"
	"io"

	"sandbar/agent/internal/frame"
)

// maxChunk bounds the payload of one output frame.
const maxChunk = 32 << 10

// Stream writes the session's frames to w: started, then stdout/stderr from
// the given offsets as output arrives, then (once the command has exited and
// everything has been sent) an optional error frame and the exit frame.
//
// Output is read from the rings at the writer's pace: when w blocks (a slow
// client; TCP backpressure) the command keeps running and its pipes keep
// being drained into the rings, where the oldest bytes age out. A reader
// that fell behind continues at the oldest byte still held, and the frame's
// offset shows the jump. flush is called whenever Stream is about to wait.
//
// Stream returns nil after the exit frame, ctx's error when ctx ends first,
// or the write error.
func (s *Session) Stream(ctx context.Context, w io.Writer, flush func(), outOff, errOff uint64) error {
	s.attach()
	defer s.detach()
	rd := newReader(outOff, errOff)
	s.mu.Lock()
	s.readers[rd] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.readers, rd)
		s.movedLocked(rd, 0, 0)
		s.mu.Unlock()
	}()

	buf := frame.Append(nil, frame.Started(s.pid))
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write started frame: %w", err)
	}
	for {
		s.mu.Lock()
		outData, outAt := s.chunkLocked(s.out, outOff)
		var errData []byte
		errAt := errOff
		if s.errs != nil {
			errData, errAt = s.chunkLocked(s.errs, errOff)
		}
		done := s.finished && len(outData) == 0 && len(errData) == 0
		var tail []frame.Frame
		if done {
			tail = s.tailLocked()
		}
		changed := s.changed
		s.mu.Unlock()

		buf = buf[:0]
		if len(outData) > 0 {
			buf = frame.Append(buf, frame.Output(false, outAt, outData))
			outOff = outAt + uint64(len(outData))
		}
		if len(errData) > 0 {
			buf = frame.Append(buf, frame.Output(true, errAt, errData))
			errOff = errAt + uint64(len(errData))
		}
		for _, f := range tail {
			buf = frame.Append(buf, f)
		}
		if len(buf) > 0 {
			if _, err := w.Write(buf); err != nil {
				return fmt.Errorf("write frames: %w", err)
			}
			// Sent: the pump may now overwrite what this reader has read.
			s.mu.Lock()
			s.movedLocked(rd, outOff, errOff)
			s.mu.Unlock()
		}
		if done {
			flush()
			return nil
		}
		if len(outData) > 0 || len(errData) > 0 {
			flush()
			continue
		}
		// Nothing to send: either no new output, or only the start of a
		// multi-byte character that is held until the rest arrives.
		flush()
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// chunkLocked reads the next payload of r from off. Unless the stream is
// complete, a trailing incomplete UTF-8 sequence is held back (it is at most
// 3 bytes and is sent with the next payload, or alone at the end).
func (s *Session) chunkLocked(r *Ring, off uint64) (data []byte, at uint64) {
	data, at = r.ReadFrom(off, maxChunk)
	if s.finished && at+uint64(len(data)) == r.End() {
		return data, at
	}
	return data[:frame.CompleteUTF8(data)], at
}

// tailLocked returns the frames that end a stream of a finished session.
func (s *Session) tailLocked() []frame.Frame {
	var fs []frame.Frame
	if s.reason == frame.ReasonTimeout {
		fs = append(fs, frame.Error(frame.ErrCommandTimeout,
			fmt.Sprintf("command timed out after %s", s.opts.Timeout)))
	}
	if s.readErr != nil {
		fs = append(fs, frame.Error(frame.ErrCommandError, s.readErr.Error()))
	}
	info := frame.ExitInfo{Reason: s.reason, Signal: s.exit.Signal}
	return append(fs, frame.Exit(s.exit.Code, info))
}
