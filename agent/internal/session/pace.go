package session

import "time"

// Pacing: the rings are lossy on purpose (a reader that stalls must never make
// the agent buffer without bound, nor block the command for long), but a
// reader that is merely a little slower than a burst of output should not
// lose bytes. So before a write would push bytes an attached reader has not
// read yet out of the ring, the pump waits for that reader, briefly, within a
// budget: at most paceWait per write and paceBudget of waiting per
// paceWindow. A command is slowed by at most paceBudget/paceWindow; past
// that, old bytes age out and the reader's next frame shows the jump.
const (
	paceWait   = 50 * time.Millisecond
	paceWindow = time.Second
	paceBudget = 200 * time.Millisecond
)

// reader is one open stream's position, read by the pump to pace writes.
type reader struct {
	out, errs uint64
}

// slowestLocked is the lowest offset of r that an attached reader still needs.
func (s *Session) slowestLocked(r *Ring) (uint64, bool) {
	var min uint64
	found := false
	for rd := range s.readers {
		off := rd.out
		if r == s.errs {
			off = rd.errs
		}
		if !found || off < min {
			min, found = off, true
		}
	}
	return min, found
}

// paceLocked waits (releasing s.mu) while writing n bytes to r would drop
// bytes a reader still needs, within the pacing budget. Called with s.mu held.
func (s *Session) paceLocked(r *Ring, n int) {
	for {
		need, ok := s.slowestLocked(r)
		if need < r.Start() {
			need = r.Start() // bytes already gone are not waited for
		}
		if !ok || r.End()+uint64(n)-need <= uint64(r.capacity) {
			return
		}
		now := time.Now()
		if now.Sub(s.paceStart) > paceWindow {
			s.paceStart, s.paceUsed = now, 0
		}
		if s.paceUsed >= paceBudget {
			return
		}
		wait := paceWait
		if left := paceBudget - s.paceUsed; left < wait {
			wait = left
		}
		advanced := s.advanced
		s.mu.Unlock()
		t := time.NewTimer(wait)
		select {
		case <-advanced:
		case <-t.C:
		}
		t.Stop()
		s.mu.Lock()
		s.paceUsed += time.Since(now)
	}
}

// movedLocked records a reader's new position and wakes a waiting pump.
func (s *Session) movedLocked(rd *reader, out, errs uint64) {
	rd.out, rd.errs = out, errs
	close(s.advanced)
	s.advanced = make(chan struct{})
}
