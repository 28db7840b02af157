package session

// Ring keeps the most recent bytes of one output stream, addressed by
// absolute offsets from the start of the stream. It holds [Start, End).
// Storage grows on demand up to the capacity, so idle sessions stay small.
// Ring is not safe for concurrent use; the session's lock protects it.
type Ring struct {
	buf        []byte
	capacity   int
	start, end uint64
}

// minRingAlloc is the first allocation of a ring.
const minRingAlloc = 4 << 10

// NewRing returns an empty ring holding at most capacity bytes (>= 1).
func NewRing(capacity int) *Ring {
	if capacity < 1 {
		capacity = 1
	}
	return &Ring{capacity: capacity}
}

// Start is the offset of the oldest byte held.
func (r *Ring) Start() uint64 { return r.start }

// End is the total number of bytes ever written.
func (r *Ring) End() uint64 { return r.end }

// Write appends p, dropping the oldest bytes beyond the capacity.
func (r *Ring) Write(p []byte) {
	if len(p) == 0 {
		return
	}
	if len(p) >= r.capacity {
		// Only the tail of p survives; nothing held before needs keeping.
		skip := len(p) - r.capacity
		p = p[skip:]
		if len(r.buf) < r.capacity {
			r.buf = make([]byte, r.capacity)
		}
		r.end += uint64(skip)
		r.start = r.end
		r.put(r.end, p)
		r.end += uint64(len(p))
		return
	}
	held := int(r.end - r.start)
	if held+len(p) > len(r.buf) && len(r.buf) < r.capacity {
		want := 2 * len(r.buf)
		if want < minRingAlloc {
			want = minRingAlloc
		}
		for want < held+len(p) {
			want *= 2
		}
		if want > r.capacity {
			want = r.capacity
		}
		r.grow(want)
	}
	r.put(r.end, p)
	r.end += uint64(len(p))
	if r.end-r.start > uint64(len(r.buf)) {
		r.start = r.end - uint64(len(r.buf))
	}
}

// grow reallocates the storage to size bytes, keeping the held bytes at
// their offset modulo the new size.
func (r *Ring) grow(size int) {
	if size <= len(r.buf) {
		return
	}
	held := r.get(r.start, int(r.end-r.start))
	r.buf = make([]byte, size)
	r.put(r.start, held)
}

// put copies p to the storage at absolute offset off, wrapping around.
func (r *Ring) put(off uint64, p []byte) {
	for len(p) > 0 {
		i := int(off % uint64(len(r.buf)))
		n := copy(r.buf[i:], p)
		p = p[n:]
		off += uint64(n)
	}
}

// get copies n bytes from absolute offset off out of the storage.
func (r *Ring) get(off uint64, n int) []byte {
	out := make([]byte, 0, n)
	for n > 0 {
		i := int(off % uint64(len(r.buf)))
		chunk := len(r.buf) - i
		if chunk > n {
			chunk = n
		}
		out = append(out, r.buf[i:i+chunk]...)
		n -= chunk
		off += uint64(chunk)
	}
	return out
}

// ReadFrom returns a copy of up to max bytes starting at off, and the offset
// of the first byte returned. An offset older than Start reads from Start
// (the returned offset shows the jump); an offset at or past End returns no
// bytes.
func (r *Ring) ReadFrom(off uint64, max int) ([]byte, uint64) {
	if off < r.start {
		off = r.start
	}
	if off >= r.end || max <= 0 {
		return nil, off
	}
	n := r.end - off
	if n > uint64(max) {
		n = uint64(max)
	}
	return r.get(off, int(n)), off
}
