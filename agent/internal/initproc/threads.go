package initproc

import (
	"runtime"
	"sync"
)

// ReserveThreads makes the Go runtime start n OS threads now and park them idle. The runtime
// keeps idle threads for reuse and starts a new one only when all are busy (goroutines blocked
// in system calls). Made at start, they are there when the sandbox's pids limit is used up by
// its commands (a fork bomb under runc, where the limit counts threads): the runtime aborts the
// whole process when it cannot start a thread it needs, and with the agent as PID 1 the
// sandbox would end with it. Under gVisor the limit sees no guest threads, and each costs
// memory in the Sentry, so the server asks for them under runc only (SANDBAR_AGENT_THREADS).
//
// Each goroutine wires itself to the thread it runs on and blocks, so the next one needs
// another thread; once all n are wired, they unwire and exit, leaving their threads idle.
func ReserveThreads(n int) {
	var wired, release sync.WaitGroup
	release.Add(1)
	wired.Add(n)
	for i := 0; i < n; i++ {
		go func() {
			runtime.LockOSThread()
			wired.Done()
			release.Wait()
			// Unwired before it exits: a goroutine that exits wired takes its thread with it.
			runtime.UnlockOSThread()
		}()
	}
	wired.Wait()
	release.Done()
}
