package proc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// ExitGrace is how long output is still collected after a command's leader
// has exited. Background processes that inherited the output pipes (or the
// pty) may keep them open indefinitely; after this grace whatever is already
// buffered is collected without waiting and the pump detaches: it keeps
// reading and discarding until the last writer closes, so that background
// processes do not die of SIGPIPE (or block on a full pipe) later.
const ExitGrace = 250 * time.Millisecond

// maxFinalDrain bounds the non-blocking drain after the grace, in case a
// background writer keeps refilling the pipe.
const maxFinalDrain = 1 << 20

// Pump copies everything read from a file into a sink, continuously, so the
// command never blocks on a full pipe no matter how slowly anyone consumes
// the output. The sink is called from the pump's goroutine only, and never
// after Done is closed.
type Pump struct {
	f    *os.File
	sink func([]byte)
	done chan struct{}
	err  error
}

// NewPump starts pumping f into sink. The pump closes f when the last
// writer has closed it.
func NewPump(f *os.File, sink func([]byte)) *Pump {
	p := &Pump{f: f, sink: sink, done: make(chan struct{})}
	go p.run()
	return p
}

func (p *Pump) run() {
	defer p.f.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := p.f.Read(buf)
		if n > 0 {
			p.sink(buf[:n])
		}
		switch {
		case err == nil:
			continue
		case errors.Is(err, os.ErrDeadlineExceeded):
			p.drain(buf)
			close(p.done)
			p.discard(buf)
			return
		case err == io.EOF, errors.Is(err, syscall.EIO), errors.Is(err, os.ErrClosed):
			// EOF; EIO is how a pty master reports that every slave fd is closed.
		default:
			p.err = fmt.Errorf("read %s: %w", p.f.Name(), err)
		}
		close(p.done)
		return
	}
}

// discard reads and drops everything until the last writer closes.
func (p *Pump) discard(buf []byte) {
	for {
		_, err := p.f.Read(buf)
		switch {
		case err == nil:
		case errors.Is(err, os.ErrDeadlineExceeded): // a repeated Stop
			if p.f.SetReadDeadline(time.Time{}) != nil {
				return
			}
		default:
			return
		}
	}
}

// drain reads what is buffered right now without waiting for more.
func (p *Pump) drain(buf []byte) {
	if err := p.f.SetReadDeadline(time.Time{}); err != nil {
		return
	}
	rc, err := p.f.SyscallConn()
	if err != nil {
		return
	}
	total := 0
	_ = rc.Read(func(fd uintptr) bool {
		for total < maxFinalDrain {
			n, err := syscall.Read(int(fd), buf)
			if n <= 0 || err != nil {
				break
			}
			p.sink(buf[:n])
			total += n
		}
		return true // never wait for readiness
	})
}

// Done is closed when the pump has delivered everything it will deliver.
func (p *Pump) Done() <-chan struct{} { return p.done }

// Err returns the read error that stopped the pump, if it was not EOF or a
// requested stop. Valid after Done is closed.
func (p *Pump) Err() error { return p.err }

// Stop makes the pump deliver what is buffered and detach; it does not wait.
func (p *Pump) Stop() {
	_ = p.f.SetReadDeadline(time.Now())
}

// Finish waits up to grace for all pumps to reach EOF, then stops those still
// running and waits until they have delivered what was buffered.
func Finish(grace time.Duration, pumps ...*Pump) {
	timer := time.NewTimer(grace)
	defer timer.Stop()
	for _, p := range pumps {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
		case <-timer.C:
			for _, q := range pumps {
				if q != nil {
					q.Stop()
				}
			}
			for _, q := range pumps {
				if q != nil {
					<-q.done
				}
			}
			return
		}
	}
}
