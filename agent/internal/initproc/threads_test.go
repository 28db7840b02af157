package initproc

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func threadCount(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "Threads:") {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "Threads:")))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatal("no Threads line")
	return 0
}

// Goroutines that each hold a thread after ReserveThreads run on the reserved threads: the
// process starts no new one (under a used-up pids limit it could not).
func TestReserveThreadsKeepsThreadsForLaterUse(t *testing.T) {
	before := threadCount(t)
	ReserveThreads(24)
	reserved := threadCount(t)
	if reserved < 24 || reserved < before {
		t.Fatalf("threads %d before, %d after reserving 24", before, reserved)
	}
	// Let the exiting goroutines park their threads.
	time.Sleep(50 * time.Millisecond)
	var held, release sync.WaitGroup
	release.Add(1)
	held.Add(16)
	for i := 0; i < 16; i++ {
		go func() {
			runtime.LockOSThread()
			held.Done()
			release.Wait()
			runtime.UnlockOSThread()
		}()
	}
	held.Wait()
	during := threadCount(t)
	release.Done()
	if during > reserved {
		t.Fatalf("16 goroutines holding threads made new ones: %d threads, %d after reserving", during, reserved)
	}
}
