package session

import "time"

// Pacing: the rings are lossy on purpose (a slow or stuck reader must never
// make the agent buffer without bound, nor hold the command up), but a reader
// that keeps up should lose nothing of a burst, however fast the command
// writes. So before a write would push out bytes an attached reader has not
// read yet, the pump waits for that reader while it is keeping up: it took
// bytes less than paceStall ago and reads at least paceMinRate. Slower
// readers are not waited for; old bytes age out and their next frame shows
// the jump.
const (
	paceStall   = 50 * time.Millisecond
	paceMinRate = 512 << 10 // bytes per second
	paceWindow  = 250 * time.Millisecond
)

// reader is one open stream's position and recent pace, read by the pump.
type reader struct {
	out, errs uint64
	moved     time.Time
	winStart  time.Time
	winBytes  uint64
	rate      float64 // bytes/s over the last full window
}

func newReader(out, errs uint64) *reader {
	now := time.Now()
	// A new reader is given the benefit of the doubt until it has a rate.
	return &reader{out: out, errs: errs, moved: now, winStart: now, rate: paceMinRate}
}

func (rd *reader) keepingUp() bool {
	return time.Since(rd.moved) < paceStall && rd.rate >= paceMinRate
}

// paceLocked waits (releasing s.mu) while writing n bytes to r would drop
// bytes that a moving reader still needs. Called with s.mu held.
func (s *Session) paceLocked(r *Ring, n int) {
	for {
		limit := r.End() + uint64(n) - uint64(r.capacity) // bytes below this are dropped
		if r.End()+uint64(n) <= uint64(r.capacity) {
			return
		}
		var waitFor *reader
		for rd := range s.readers {
			off := rd.out
			if r == s.errs {
				off = rd.errs
			}
			if off < limit && off >= r.Start() && rd.keepingUp() {
				waitFor = rd
				break
			}
		}
		if waitFor == nil {
			return
		}
		advanced := s.advanced
		s.mu.Unlock()
		t := time.NewTimer(paceStall)
		select {
		case <-advanced:
		case <-t.C:
		}
		t.Stop()
		s.mu.Lock()
	}
}

// movedLocked records a reader's new position and wakes a waiting pump.
func (s *Session) movedLocked(rd *reader, out, errs uint64) {
	now := time.Now()
	if out+errs > rd.out+rd.errs {
		rd.winBytes += out + errs - rd.out - rd.errs
	}
	if el := now.Sub(rd.winStart); el >= paceWindow {
		rd.rate = float64(rd.winBytes) / el.Seconds()
		rd.winStart, rd.winBytes = now, 0
	}
	rd.out, rd.errs, rd.moved = out, errs, now
	close(s.advanced)
	s.advanced = make(chan struct{})
}
