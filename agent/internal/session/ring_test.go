package session

import (
	"bytes"
	"fmt"
	"math/rand"
	"testing"
)

func TestRing(t *testing.T) {
	tests := []struct {
		name      string
		capacity  int
		writes    []string
		readOff   uint64
		readMax   int
		wantData  string
		wantOff   uint64
		wantStart uint64
		wantEnd   uint64
	}{
		{"empty", 8, nil, 0, 100, "", 0, 0, 0},
		{"simple", 8, []string{"abc"}, 0, 100, "abc", 0, 0, 3},
		{"from middle", 8, []string{"abcdef"}, 2, 100, "cdef", 2, 0, 6},
		{"max bytes", 8, []string{"abcdef"}, 1, 2, "bc", 1, 0, 6},
		{"exactly full", 8, []string{"abcd", "efgh"}, 0, 100, "abcdefgh", 0, 0, 8},
		{"overflow skips", 8, []string{"abcdef", "ghijk"}, 0, 100, "defghijk", 3, 3, 11},
		{"wrapped read", 8, []string{"abcdef", "ghijk"}, 5, 100, "fghijk", 5, 3, 11},
		{"single huge write", 4, []string{"0123456789"}, 0, 100, "6789", 6, 6, 10},
		{"huge write after data", 4, []string{"ab", "0123456789"}, 1, 100, "6789", 8, 8, 12},
		{"read at end", 8, []string{"abc"}, 3, 100, "", 3, 0, 3},
		{"read past end", 8, []string{"abc"}, 9, 100, "", 9, 0, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRing(tt.capacity)
			for _, w := range tt.writes {
				r.Write([]byte(w))
			}
			data, off := r.ReadFrom(tt.readOff, tt.readMax)
			if string(data) != tt.wantData || off != tt.wantOff {
				t.Fatalf("ReadFrom(%d) = %q@%d, want %q@%d", tt.readOff, data, off, tt.wantData, tt.wantOff)
			}
			if r.Start() != tt.wantStart || r.End() != tt.wantEnd {
				t.Fatalf("range [%d,%d), want [%d,%d)", r.Start(), r.End(), tt.wantStart, tt.wantEnd)
			}
		})
	}
}

// TestRingMatchesModel compares the ring with a plain "keep the last N
// bytes" model under random writes that cross the growth steps.
func TestRingMatchesModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, capacity := range []int{1, 7, 4096, 10000} {
		t.Run(fmt.Sprint(capacity), func(t *testing.T) {
			r := NewRing(capacity)
			var all []byte
			for i := 0; i < 300; i++ {
				p := make([]byte, rng.Intn(3*capacity/2+2))
				rng.Read(p)
				r.Write(p)
				all = append(all, p...)
				keep := all
				if len(keep) > capacity {
					keep = keep[len(keep)-capacity:]
				}
				got, off := r.ReadFrom(0, len(all)+1)
				if off != uint64(len(all)-len(keep)) || !bytes.Equal(got, keep) {
					t.Fatalf("write %d: off %d len %d, want off %d len %d", i, off, len(got), len(all)-len(keep), len(keep))
				}
				if len(r.buf) > capacity {
					t.Fatalf("storage %d exceeds capacity %d", len(r.buf), capacity)
				}
			}
		})
	}
}
